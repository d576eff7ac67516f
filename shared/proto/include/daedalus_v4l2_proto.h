/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * daedalus-v4l2 wire protocol between the kernel module and daedalusd.
 *
 * This header is the only definition of the wire format. The kernel module
 * includes it; the daemon gets the same layout from the C compiler through
 * cffi (API mode), and a layout test pins every size and offset.
 *
 * Transport: the misc character device /dev/daedalus-v4l2 (mode 0600, one
 * daemon at a time).
 *  - read(2) returns exactly one message: a struct daedalus_msg_hdr followed
 *    by hdr.payload_len bytes. A buffer too small for the next message gets
 *    -EINVAL and the message stays queued. O_NONBLOCK gives -EAGAIN when no
 *    message is queued; poll(2) reports POLLIN when one is.
 *  - write(2) takes exactly one message: the byte count must equal
 *    sizeof(struct daedalus_msg_hdr) + hdr.payload_len.
 *
 * Every message written by the daemon is validated before anything else
 * happens: magic, version, flags and reserved fields zero, payload length
 * matching the write and at most DAEDALUS_MAX_PAYLOAD, a response type, a
 * cookie that names a request currently waiting for its answer, and a payload
 * valid for its type. Anything else is rejected with -EINVAL and changes
 * nothing.
 *
 * Session: right after open(2) the kernel queues a HELLO request. Until the
 * daemon answers it with a HELLO response carrying the same protocol version,
 * the kernel sends no other request. A request that gets no answer within its
 * timeout fails with -ETIMEDOUT; when the daemon closes the device every
 * waiting request fails with -ENOTCONN at once.
 */
#ifndef _UAPI_DAEDALUS_V4L2_PROTO_H
#define _UAPI_DAEDALUS_V4L2_PROTO_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* "DV4L" in memory on little-endian machines. */
#define DAEDALUS_PROTO_MAGIC		0x4c345644
#define DAEDALUS_PROTO_VERSION		12

/* Largest payload of one message, in bytes. */
#define DAEDALUS_MAX_PAYLOAD		(1024 * 1024)

/*
 * Largest picture, in pixels. The kernel offers no larger format
 * (ENUM_FRAMESIZES, TRY_FMT) and rejects a decoded frame beyond them in a
 * RESP_FRAME (struct daedalus_frame_info); the daemon refuses such frames
 * itself, so that they never become answers the kernel rejects.
 */
#define DAEDALUS_MAX_WIDTH		8192
#define DAEDALUS_MAX_HEIGHT		4352

/* Set in daedalus_msg_hdr.type on the daemon's answers. */
#define DAEDALUS_MSG_RESPONSE		0x8000

/**
 * enum daedalus_msg_type - what a message carries
 * @DAEDALUS_MSG_HELLO: kernel -> daemon on connect; payload
 *	struct daedalus_hello. The answer carries the daemon's struct
 *	daedalus_hello.
 * @DAEDALUS_MSG_PING: kernel -> daemon; any payload. The answer must carry
 *	the same bytes.
 * @DAEDALUS_MSG_DECODE: kernel -> daemon (REQ_DECODE); payload struct
 *	daedalus_decode_req followed by the compressed bitstream. The answer
 *	(RESP_FRAME) carries struct daedalus_frame_resp, then nr_frames
 *	struct daedalus_frame_info, then msg_len bytes of UTF-8 message.
 * @DAEDALUS_MSG_CLOSE_STREAM: kernel -> daemon; payload struct
 *	daedalus_stream. The daemon drops that stream's decoder (and the frames
 *	it keeps for FETCH); the answer has no payload.
 * @DAEDALUS_MSG_FEED: kernel -> daemon; payload struct daedalus_decode_req
 *	followed by one OUTPUT buffer's bytes as the application queued them:
 *	any slice of a continuous bytestream for H.264, one frame (or
 *	superframe / temporal unit) for VP9 and AV1. The daemon parses and
 *	decodes it and keeps the frames it completes, oldest first, for FETCH.
 *	The answer is a RESP_FRAME listing those frames (each digest names
 *	its frame: see struct daedalus_frame_info); with
 *	DAEDALUS_DECODE_RESYNC it first lists the frames the daemon still keeps
 *	from earlier FEEDs, whose answers the kernel lost.
 * @DAEDALUS_MSG_FETCH: kernel -> daemon; payload struct daedalus_fetch_req,
 *	which names the frame wanted. The answer is struct daedalus_fetch_resp
 *	followed by that frame's pixels laid out as the request says; the
 *	daemon then drops it and every frame it kept before it.
 * @DAEDALUS_MSG_DECODE_REQUEST: kernel -> daemon, from the stateless node
 *	(phase 8.9): payload struct daedalus_request_decode, then its
 *	nr_ctrls controls (struct daedalus_request_ctrl, each followed by its
 *	value). One media request's job: decode the bitstream of one OUTPUT
 *	buffer, with the request's controls, into one CAPTURE buffer. Both
 *	buffers cross as dma-bufs (DAEDALUS_IOC_GET_DMABUF, index 0: OUTPUT,
 *	read-only; index 1: CAPTURE, read-write). The answer is struct
 *	daedalus_request_decode_resp followed by msg_len bytes of UTF-8
 *	message.
 *
 * Version history: 1 = HELLO, PING (phase 8.2); 2 = DECODE, CLOSE_STREAM
 * (phase 8.4); 3 = FEED, FETCH (phase 8.5); 4 = FETCH names its frame, so
 * frames of a FEED whose answer the kernel never took are dropped (phase 8.5);
 * 5 = stream ids are 64 bits wide, so they are never reused (phase 8.5);
 * 6 = FEED's DAEDALUS_DECODE_RESYNC: the frames of a FEED whose answer the
 * kernel lost are listed again, not dropped (phase 8.5); 7 = frames decoded
 * with errors are listed with DAEDALUS_FRAME_CORRUPT, not dropped (phase 8.5);
 * 8 = DAEDALUS_IOC_GET_DMABUF, FEED's DAEDALUS_DECODE_DMABUF and FETCH's
 * DAEDALUS_FETCH_DMABUF: bitstream and pixels cross as dma-bufs of the
 * application's own buffers, not inline (phase 8.6); 9 = struct
 * daedalus_frame_info carries the frame's colour description (@primaries,
 * @transfer, @matrix, @range) in what was its first reserved word; @reserved
 * is the one word left (phase 8.6); 10 = DAEDALUS_IOC_IN_FLIGHT: the daemon
 * decodes a DMABUF FEED's bytes only if the request was still in flight
 * when it had copied them (phase 8.6); 11 = DAEDALUS_PIXFMT_NV16 and
 * DAEDALUS_PIXFMT_NV24: 4:2:2 and 4:4:4 frames (phase 8.8); 12 =
 * DECODE_REQUEST: the stateless node's jobs, controls inline, both buffers
 * through DAEDALUS_IOC_GET_DMABUF (phase 8.9).
 */
enum daedalus_msg_type {
	DAEDALUS_MSG_HELLO		= 1,
	DAEDALUS_MSG_PING		= 2,
	DAEDALUS_MSG_DECODE		= 3,
	DAEDALUS_MSG_CLOSE_STREAM	= 4,
	DAEDALUS_MSG_FEED		= 5,
	DAEDALUS_MSG_FETCH		= 6,
	DAEDALUS_MSG_DECODE_REQUEST	= 7,
};

/**
 * struct daedalus_msg_hdr - header of every message, both directions
 * @magic: DAEDALUS_PROTO_MAGIC.
 * @version: DAEDALUS_PROTO_VERSION.
 * @type: enum daedalus_msg_type; answers add DAEDALUS_MSG_RESPONSE.
 * @cookie: request identifier chosen by the kernel, unique for the life of
 *	the module; an answer echoes the cookie of its request.
 * @payload_len: bytes of payload following the header.
 * @flags: none defined; must be zero.
 * @status: answers: 0 on success or a positive errno saying why the daemon
 *	could not serve the request (the payload may then hold a UTF-8
 *	message). Requests: zero.
 * @reserved: must be zero.
 *
 * Structure used by read(2) and write(2) on /dev/daedalus-v4l2.
 */
struct daedalus_msg_hdr {
	__u32 magic;
	__u16 version;
	__u16 type;
	__u64 cookie;
	__u32 payload_len;
	__u32 flags;
	__u32 status;
	__u32 reserved[5];
};

/**
 * struct daedalus_hello - payload of HELLO, both directions
 * @proto_version: DAEDALUS_PROTO_VERSION of the sender.
 * @max_payload: largest payload the sender accepts.
 * @phase: roadmap phase of the sender times 10 (8.2 -> 82), informational.
 * @reserved: must be zero.
 */
struct daedalus_hello {
	__u32 proto_version;
	__u32 max_payload;
	__u32 phase;
	__u32 reserved[5];
};

/**
 * enum daedalus_codec - compressed formats
 * @DAEDALUS_CODEC_VP9: VP9 frames (an IVF frame, possibly a superframe).
 * @DAEDALUS_CODEC_H264: H.264 Annex-B byte stream (start codes).
 * @DAEDALUS_CODEC_AV1: AV1 low-overhead OBU stream (one temporal unit).
 */
enum daedalus_codec {
	DAEDALUS_CODEC_VP9	= 1,
	DAEDALUS_CODEC_H264	= 2,
	DAEDALUS_CODEC_AV1	= 3,
};

/**
 * enum daedalus_pixfmt - decoded frame layouts
 * @DAEDALUS_PIXFMT_NV12: 8-bit 4:2:0, Y plane then interleaved CbCr.
 * @DAEDALUS_PIXFMT_P010: 10-bit 4:2:0 in 16-bit little-endian words (value
 *	in the upper 10 bits), Y plane then interleaved CbCr.
 * @DAEDALUS_PIXFMT_NV16: 8-bit 4:2:2, Y plane then interleaved CbCr: one
 *	Cb, Cr pair for every two pixels of a row, on every row (phase 8.8).
 * @DAEDALUS_PIXFMT_NV24: 8-bit 4:4:4, Y plane then interleaved CbCr: one
 *	Cb, Cr pair for every pixel of every row (phase 8.8).
 *
 * In a buffer of @height luma rows @bytesperline bytes apart (a FETCH's
 * geometry; V4L2's single-plane layouts of the same names, whose chroma
 * rows are as padded as their luma rows), the Y plane takes @bytesperline
 * x @height bytes and the CbCr plane follows it at @bytesperline * @height:
 *
 *	======  ================  ==========  =============================
 *	layout  CbCr row stride   CbCr rows   buffer bytes
 *	======  ================  ==========  =============================
 *	NV12    bytesperline      height / 2  bytesperline * height * 3 / 2
 *	P010    bytesperline      height / 2  bytesperline * height * 3 / 2
 *	NV16    bytesperline      height      bytesperline * height * 2
 *	NV24    2 * bytesperline  height      bytesperline * height * 3
 *	======  ================  ==========  =============================
 *
 * A picture of @w x @h pixels takes @h luma rows of @w samples, then
 * ceil(@h / 2) (NV12, P010) or @h (NV16, NV24) CbCr rows of
 * 2 * ceil(@w / 2) (NV12, P010, NV16) or 2 * @w (NV24) samples; a sample
 * is one byte, two for P010. Tightly packed, that is what
 * ``ffmpeg -pix_fmt nv12 / p010le / nv16 / nv24 -f rawvideo`` writes.
 */
enum daedalus_pixfmt {
	DAEDALUS_PIXFMT_NV12	= 1,
	DAEDALUS_PIXFMT_P010	= 2,
	DAEDALUS_PIXFMT_NV16	= 3,
	DAEDALUS_PIXFMT_NV24	= 4,
};

/* daedalus_decode_req.flags */
/* Drain after this bitstream: return the frames the decoder holds back. */
#define DAEDALUS_DECODE_FLUSH	0x1
/* FEED only: first drop the stream's decoder and kept frames (a seek). */
#define DAEDALUS_DECODE_RESET	0x2
/*
 * FEED only: the kernel lost the answer to an earlier FEED of this stream (it
 * timed out or was malformed) and holds no pending frame of it: the answer
 * lists first every frame the daemon keeps for the stream, oldest first, then
 * this FEED's own frames, at most DAEDALUS_MAX_FRAMES in all; frames that do
 * not fit stay kept and are listed by the next RESYNC FEED (the kernel sends
 * another while an answer to a RESYNC FEED lists DAEDALUS_MAX_FRAMES frames).
 */
#define DAEDALUS_DECODE_RESYNC	0x4
/*
 * FEED only: the bitstream is not inline (bitstream_len bytes follow nothing):
 * it is @bitstream_len bytes at @bitstream_offset of the OUTPUT buffer, which
 * the daemon maps through DAEDALUS_IOC_GET_DMABUF (read-only) while it
 * handles this FEED.
 */
#define DAEDALUS_DECODE_DMABUF	0x8

/**
 * struct daedalus_decode_req - payload of REQ_DECODE, before the bitstream
 * @stream_id: the kernel's stream (decoder context); the daemon keeps one
 *	decoder per stream id, with its reference frames, until CLOSE_STREAM.
 *	Stream ids are never reused while the module is loaded (64 bits).
 * @timestamp: opaque, copied to the frames this request produces.
 * @codec: enum daedalus_codec; fixed for the life of a stream.
 * @flags: DAEDALUS_DECODE_* flags.
 * @bitstream_len: bytes of bitstream following this struct (with
 *	DAEDALUS_DECODE_DMABUF: bytes of bitstream in the OUTPUT buffer, and
 *	none follow).
 * @bitstream_offset: with DAEDALUS_DECODE_DMABUF, where the bitstream starts
 *	in the OUTPUT buffer; otherwise zero.
 * @reserved: must be zero.
 */
struct daedalus_decode_req {
	__u64 stream_id;
	__u64 timestamp;
	__u32 codec;
	__u32 flags;
	__u32 bitstream_len;
	__u32 bitstream_offset;
	__u32 reserved[4];
};

/* Most frames one RESP_FRAME reports. */
#define DAEDALUS_MAX_FRAMES		16
/* Longest error message in a RESP_FRAME, in bytes. */
#define DAEDALUS_MAX_MSG		256

/* daedalus_frame_resp.status */
#define DAEDALUS_DECODE_OK	0	/* decoded; nr_frames may be 0 (held) */
#define DAEDALUS_DECODE_ERROR	1	/* bitstream rejected; see error, msg */

/* daedalus_frame_info.flags */
#define DAEDALUS_FRAME_KEY	0x1	/* a keyframe / IDR picture */
/*
 * Decoded with errors (FFmpeg concealed damage or a missing reference): the
 * kernel hands out its CAPTURE buffer flagged V4L2_BUF_FLAG_ERROR, without
 * pixels, and fetches it with DAEDALUS_FETCH_DISCARD.
 */
#define DAEDALUS_FRAME_CORRUPT	0x2

/*
 * daedalus_frame_info colour description: @primaries, @transfer and @matrix
 * are ITU-T H.273 code points (ColourPrimaries, TransferCharacteristics,
 * MatrixCoefficients; FFmpeg's AVCOL_PRI_*, AVCOL_TRC_* and AVCOL_SPC_*
 * values), @range FFmpeg's AVColorRange.
 */
#define DAEDALUS_COLOUR_UNSPECIFIED	2	/* H.273 "unspecified" */
#define DAEDALUS_RANGE_UNSPECIFIED	0
#define DAEDALUS_RANGE_LIMITED		1	/* "video" / "tv" / MPEG range */
#define DAEDALUS_RANGE_FULL		2	/* "pc" / JPEG range */

/**
 * struct daedalus_frame_info - one decoded frame in a RESP_FRAME
 * @width: visible width in pixels.
 * @height: visible height in pixels.
 * @pixfmt: enum daedalus_pixfmt.
 * @flags: DAEDALUS_FRAME_* flags.
 * @digest: in the answer to DECODE, FNV-1a 64 over the tightly packed
 *	frame: the luma plane then the interleaved chroma plane, rows without
 *	padding (NV12: width bytes per row; P010: 2 * width bytes per row,
 *	little-endian words). In the answer to FEED, a value the daemon
 *	chooses that names the frame among the stream's (its number in the
 *	stream), which FETCH gives back; the kernel only compares it.
 * @timestamp: the timestamp of the request whose bitstream held the frame.
 * @primaries: the colour primaries the bitstream signals for this frame, an
 *	H.273 ColourPrimaries code point; DAEDALUS_COLOUR_UNSPECIFIED when it
 *	signals none.
 * @transfer: the transfer characteristics, an H.273
 *	TransferCharacteristics code point, or DAEDALUS_COLOUR_UNSPECIFIED.
 * @matrix: the matrix coefficients (Y'CbCr encoding), an H.273
 *	MatrixCoefficients code point, or DAEDALUS_COLOUR_UNSPECIFIED.
 * @range: DAEDALUS_RANGE_LIMITED, DAEDALUS_RANGE_FULL, or
 *	DAEDALUS_RANGE_UNSPECIFIED when the bitstream signals no range.
 * @reserved: must be zero.
 *
 * The colour description is codec-neutral: the code points the bitstream
 * carries (VP9's color_space and color_range, H.264's VUI, AV1's
 * color_config), as the daemon's decoder reports them. The kernel never
 * trusts it: a value it does not know (out of its table, or one V4L2 has no
 * name for) counts as not signalled, and the CAPTURE format keeps the
 * application's colorimetry for that field.
 */
struct daedalus_frame_info {
	__u32 width;
	__u32 height;
	__u32 pixfmt;
	__u32 flags;
	__u64 digest;
	__u64 timestamp;
	__u8 primaries;
	__u8 transfer;
	__u8 matrix;
	__u8 range;
	__u32 reserved;
};

/**
 * struct daedalus_frame_resp - payload of RESP_FRAME, before the frames
 * @status: DAEDALUS_DECODE_OK or DAEDALUS_DECODE_ERROR.
 * @error: with DAEDALUS_DECODE_ERROR, a positive errno (EILSEQ: corrupt
 *	bitstream, EINVAL: bad request, ENOMEM ...; EOPNOTSUPP: the stream
 *	needs a pixel layout the daemon does not deliver exactly (4:2:2 /
 *	4:4:4 chroma before phase 8.8; deeper than 8-bit 4:2:2 / 4:4:4 or
 *	10-bit 4:2:0); the kernel refuses the stream); otherwise zero.
 * @nr_frames: struct daedalus_frame_info entries that follow, at most
 *	DAEDALUS_MAX_FRAMES.
 * @msg_len: bytes of UTF-8 message after the entries, at most
 *	DAEDALUS_MAX_MSG, not NUL-terminated.
 * @reserved: must be zero.
 */
struct daedalus_frame_resp {
	__u32 status;
	__u32 error;
	__u32 nr_frames;
	__u32 msg_len;
	__u32 reserved[4];
};

/**
 * struct daedalus_stream - payload of CLOSE_STREAM
 * @stream_id: the stream whose decoder is dropped.
 * @reserved: must be zero.
 */
struct daedalus_stream {
	__u64 stream_id;
	__u32 reserved[2];
};

/* daedalus_fetch_req.flags */
#define DAEDALUS_FETCH_DISCARD	0x1	/* drop the frame; no pixels in the answer */
/*
 * Write the pixels into the CAPTURE buffer itself, mapped through
 * DAEDALUS_IOC_GET_DMABUF (read-write) while the daemon handles this FETCH,
 * laid out as for the inline answer; the answer carries no pixels and its
 * @bytes says how many were written (the layout's buffer bytes, enum
 * daedalus_pixfmt: bytesperline * height * 3 / 2 for NV12).
 */
#define DAEDALUS_FETCH_DMABUF	0x2

/**
 * struct daedalus_fetch_req - payload of FETCH
 * @stream_id: the stream whose kept frame is wanted.
 * @timestamp: the wanted frame's timestamp, as the FEED answer listed it.
 * @digest: the wanted frame's digest, as the FEED answer listed it.
 * @flags: DAEDALUS_FETCH_* flags.
 * @bytesperline: bytes per luma row in the destination buffer; the chroma
 *	rows' stride follows from it (enum daedalus_pixfmt: the same, twice
 *	that for NV24).
 * @height: rows of the luma plane in the destination buffer (at least the
 *	frame's height); the chroma plane starts at bytesperline * height and
 *	has height / 2 rows (NV12, P010) or height rows (NV16, NV24).
 * @max_bytes: size of the destination buffer.
 * @reserved: must be zero.
 *
 * The daemon answers with the oldest kept frame that has @timestamp and
 * @digest and drops the frames kept before it: frames the kernel no longer
 * knows of, which it never fetches (a kernel that lost a FEED's answer gets
 * that FEED's frames listed again with DAEDALUS_DECODE_RESYNC instead). If no
 * kept frame matches, the answer is ENOENT and nothing is dropped.
 *
 * The pixels are in the frame's layout (struct daedalus_frame_info's
 * @pixfmt), each row padded with zeros to its stride and the rows past the
 * frame's height zero-filled, so exactly the layout's buffer bytes (enum
 * daedalus_pixfmt: bytesperline * height * 3 / 2 for NV12 and P010) follow
 * the answer's struct daedalus_fetch_resp (none with
 * DAEDALUS_FETCH_DISCARD).
 */
struct daedalus_fetch_req {
	__u64 stream_id;
	__u64 timestamp;
	__u64 digest;
	__u32 flags;
	__u32 bytesperline;
	__u32 height;
	__u32 max_bytes;
	__u32 reserved[2];
};

/**
 * struct daedalus_fetch_resp - payload of FETCH's answer, before the pixels
 * @frame: the frame, exactly as the FEED answer that completed it listed it.
 * @bytes: pixel bytes that follow.
 * @reserved: must be zero.
 */
struct daedalus_fetch_resp {
	struct daedalus_frame_info frame;
	__u32 bytes;
	__u32 reserved[3];
};

/**
 * struct daedalus_dmabuf_req - argument of DAEDALUS_IOC_GET_DMABUF
 * @cookie: a request that this daemon has read and not answered yet.
 * @index: which buffer of that request's job: FEED with
 *	DAEDALUS_DECODE_DMABUF has one, 0, its OUTPUT buffer; FETCH with
 *	DAEDALUS_FETCH_DMABUF one, 0, its CAPTURE buffer; DECODE_REQUEST two,
 *	0 its OUTPUT buffer and 1 its CAPTURE buffer.
 * @flags: must be zero.
 * @fd: set by the kernel: a new dma-buf file descriptor (O_CLOEXEC; read-only
 *	for an OUTPUT buffer, read-write for a CAPTURE buffer). For a buffer
 *	the application imported (V4L2_MEMORY_DMABUF) it is the application's
 *	own dma-buf, open with whatever access its exporter gave it: the daemon
 *	maps OUTPUT buffers read-only (PROT_READ) itself.
 * @size: set by the kernel: bytes the daemon may map (the plane's length).
 * @reserved: must be zero.
 *
 * Trust model: the kernel hands out a buffer only for a request of this
 * daemon that is still waiting for its answer, and only the buffer that
 * request's job owns; any other cookie, another daemon's request or one
 * already answered, failed or timed out is -ENOENT; a request without
 * buffers is -ENOENT too, an @index its job does not have -EINVAL, @flags or
 * @reserved not zero -EINVAL. The daemon brackets its CPU access with
 * DMA_BUF_IOCTL_SYNC (START, END), as every CPU user of a dma-buf should.
 * A dma-buf cannot be
 * revoked: a daemon that keeps the fd (or its mapping) after answering can
 * still read or write that buffer's memory, which by then belongs to the
 * application again. That is why /dev/daedalus-v4l2 is root-only and the
 * daemon closes each fd and unmaps it before it answers; the kernel never
 * relies on the daemon's pixels for its own safety.
 */
struct daedalus_dmabuf_req {
	__u64 cookie;
	__u32 index;
	__u32 flags;
	__s32 fd;
	__u32 size;
	__u32 reserved[2];
};

/* daedalus_request_decode.flags */
/*
 * The first OUTPUT buffer decoded into this CAPTURE buffer (v4l2-mem2mem's
 * new_frame): without V4L2_BUF_FLAG_M2M_HOLD_CAPTURE_BUF on the previous
 * job, always set.
 */
#define DAEDALUS_REQUEST_NEW_FRAME	0x1
/*
 * The application holds the CAPTURE buffer for more OUTPUT buffers of the
 * same picture (V4L2_BUF_FLAG_M2M_HOLD_CAPTURE_BUF): the buffer is not handed
 * back after this job, and the daemon may write the picture now or with a
 * later job of the same CAPTURE buffer (the one without this flag).
 */
#define DAEDALUS_REQUEST_HOLD		0x2
/*
 * The first job since OUTPUT started streaming (the start, or a seek): the
 * daemon drops whatever it kept of the stream's earlier jobs.
 */
#define DAEDALUS_REQUEST_RESET		0x4

/**
 * struct daedalus_request_decode - payload of DECODE_REQUEST, before the controls
 * @stream_id: the file of the stateless node (its decoder in the daemon),
 *	never reused while the module is loaded, as struct
 *	daedalus_decode_req's; dropped with CLOSE_STREAM.
 * @timestamp: the OUTPUT buffer's timestamp (ns, struct vb2_buffer's), which
 *	the CAPTURE buffer gets too: the controls name reference pictures by
 *	it (VP9 last_frame_ts, golden_frame_ts, alt_frame_ts; H.264 dpb[]
 *	reference_ts).
 * @codec: enum daedalus_codec of the OUTPUT format (VP9: VP9_FRAME, one
 *	frame per buffer, no superframe index; H.264: H264_SLICE, Annex B
 *	start codes, frame-based: all slices of a picture (or field)).
 * @flags: DAEDALUS_REQUEST_* flags.
 * @out_index: the OUTPUT buffer's index in its queue (informational: the
 *	daemon reaches the buffer as the job's buffer 0).
 * @bitstream_offset: where the bitstream starts in the OUTPUT buffer (its
 *	data_offset).
 * @bitstream_len: bytes of bitstream there (bytesused - data_offset).
 * @cap_index: the CAPTURE buffer's index in its queue (informational: the
 *	daemon reaches it as the job's buffer 1).
 * @pixfmt: enum daedalus_pixfmt of the CAPTURE buffer.
 * @width: the CAPTURE format's width: the coded width the application set
 *	on OUTPUT, rounded up to even.
 * @height: the CAPTURE format's height, likewise.
 * @bytesperline: bytes per luma row of the CAPTURE buffer; the chroma rows'
 *	stride follows from it (enum daedalus_pixfmt).
 * @sizeimage: the CAPTURE layout's buffer bytes (enum daedalus_pixfmt:
 *	bytesperline * height * 3 / 2 for NV12); the buffer holds at least as
 *	many.
 * @nr_ctrls: struct daedalus_request_ctrl entries that follow.
 * @ctrls_len: bytes that follow this struct: the entries and their values.
 * @reserved: must be zero.
 *
 * The controls are the codec's compound stateless controls, every one of
 * them, each with the value it has for this job (the request's, or the one
 * it kept from an earlier request or its default when the request did not
 * set it, as V4L2 applies a request): VP9: V4L2_CID_STATELESS_VP9_FRAME
 * (struct v4l2_ctrl_vp9_frame, 168 bytes) and _COMPRESSED_HDR (2040);
 * H.264: _H264_SPS (1048), _PPS (12), _SCALING_MATRIX (480),
 * _PRED_WEIGHTS (772), _SLICE_PARAMS (152), _DECODE_PARAMS (560); AV1
 * (kernels with its uAPI): _AV1_SEQUENCE (12), _AV1_TILE_GROUP_ENTRY (16
 * per entry, a dynamic array of up to 512: @elems of its entry is the
 * count the request set), _AV1_FRAME (1784) and _AV1_FILM_GRAIN (194).
 * With their entries and padding that is 2240 bytes for VP9, 3128 for
 * H.264 and at most 10288 for AV1; the kernel sends at most
 * DAEDALUS_REQUEST_CTRLS_MAX. The values are
 * V4L2's uAPI structs
 * as <linux/v4l2-controls.h> lays them out, which this header does not
 * repeat: the daemon reads them by the control's id.
 */
struct daedalus_request_decode {
	__u64 stream_id;
	__u64 timestamp;
	__u32 codec;
	__u32 flags;
	__u32 out_index;
	__u32 bitstream_offset;
	__u32 bitstream_len;
	__u32 cap_index;
	__u32 pixfmt;
	__u32 width;
	__u32 height;
	__u32 bytesperline;
	__u32 sizeimage;
	__u32 nr_ctrls;
	__u32 ctrls_len;
	__u32 reserved[3];
};

/* Most bytes of controls (entries, values, padding) one DECODE_REQUEST carries. */
#define DAEDALUS_REQUEST_CTRLS_MAX	16384

/* daedalus_request_ctrl.flags */
/* The job's request set this control (else it kept its earlier value). */
#define DAEDALUS_CTRL_IN_REQUEST	0x1

/**
 * struct daedalus_request_ctrl - one control of a DECODE_REQUEST
 * @id: the V4L2 control id (V4L2_CID_STATELESS_*).
 * @flags: DAEDALUS_CTRL_* flags.
 * @size: bytes of value that follow: @elems times the size of the
 *	control's uAPI struct.
 * @elems: elements of the value (1 for each control the node has now).
 *
 * The value follows, padded with zeros to a multiple of 8 bytes; the next
 * entry starts after the padding.
 */
struct daedalus_request_ctrl {
	__u32 id;
	__u32 flags;
	__u32 size;
	__u32 elems;
};

/**
 * struct daedalus_request_decode_resp - payload of DECODE_REQUEST's answer
 * @error: 0, or a positive errno saying why the picture was not decoded
 *	(EILSEQ: corrupt bitstream, EINVAL: controls that make no sense,
 *	EOPNOTSUPP: a stream the CAPTURE format cannot hold, ...): both
 *	buffers go back to the application flagged V4L2_BUF_FLAG_ERROR.
 * @bytes: bytes of picture written into the CAPTURE buffer: with @error 0,
 *	the request's @sizeimage (or, with DAEDALUS_REQUEST_HOLD, 0 when the
 *	picture is written by a later job); with an @error, 0.
 * @msg_len: bytes of UTF-8 message after this struct, at most
 *	DAEDALUS_MAX_MSG, not NUL-terminated.
 * @reserved: must be zero.
 *
 * The picture is written laid out as the request says (enum
 * daedalus_pixfmt at @bytesperline, rows past the picture zero-filled), into
 * the CAPTURE buffer mapped through DAEDALUS_IOC_GET_DMABUF while the
 * request is in flight: an answer whose @bytes is not 0 from a daemon that
 * never took buffer 1 is rejected. As for FEED, the daemon decodes what it
 * copied out of the OUTPUT buffer only if DAEDALUS_IOC_IN_FLIGHT still says
 * 0 after the copy. A header status other than 0 fails the job too.
 *
 * A stream's DECODE_REQUESTs come one at a time (the node runs one job at a
 * time) and the daemon handles them in that order, so a late write into a
 * CAPTURE buffer of a job the kernel gave up on (the watchdog) lands before
 * the next job that reaches the daemon; that buffer went back to the
 * application in error, without payload.
 */
struct daedalus_request_decode_resp {
	__u32 error;
	__u32 bytes;
	__u32 msg_len;
	__u32 reserved[5];
};

/*
 * DAEDALUS_IOC_IN_FLIGHT - is request *cookie (a __u64) still waiting for
 * this daemon's answer? 0: yes; -ENOENT: it was answered, failed, timed out
 * or cancelled (or is no request of this daemon).
 *
 * The daemon asks after it copied a FEED's bitstream out of the OUTPUT
 * buffer (DAEDALUS_DECODE_DMABUF), and decodes the copy only on 0. Once the
 * kernel gives up on a request (the watchdog) it hands the buffer back to
 * the application, which may fill it with the next packet while a daemon
 * that was slow or stopped still reads it: a copy finished while the request
 * was still in flight was made before that, any other copy may mix two
 * packets. A CAPTURE buffer needs no such check: the daemon's FETCHes of a
 * stream run one after another, so a late write lands before the next FETCH
 * into the same buffer, and a buffer given back after a timeout is an
 * ERROR buffer with no payload.
 */
/* ioctls of /dev/daedalus-v4l2 */
#define DAEDALUS_IOC_MAGIC		0xDA
#define DAEDALUS_IOC_GET_DMABUF	_IOWR(DAEDALUS_IOC_MAGIC, 1, struct daedalus_dmabuf_req)
#define DAEDALUS_IOC_IN_FLIGHT	_IOW(DAEDALUS_IOC_MAGIC, 2, __u64)

#endif /* _UAPI_DAEDALUS_V4L2_PROTO_H */
