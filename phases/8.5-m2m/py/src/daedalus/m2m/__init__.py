"""Phase 8.5: the stateful V4L2 memory-to-memory decoder, userspace half.

- ``stateful``: the FEED / FETCH handler of daedalusd (per kernel stream: a
  PyAV decoder, FFmpeg's H.264 parser for byte-stream buffers, the decoded
  frames waiting for FETCH);
- ``layout``: frames between their tightly packed form and a CAPTURE buffer
  (stride, plane offsets, cropping);
- ``v4l2``: a stateful-decoder client of the V4L2 node (dev-decoder.rst) on
  linuxpy's raw structs;
- ``cli``: ``daedalus-v4l2 decode FILE -o OUT.yuv [--compare]``;
- ``reference``: Debian's ffmpeg decoding the same file, the independent
  reference the decoded frames are compared with byte for byte.
"""
