#!/bin/sh
C=/work/main/phases/8.3-parse/corpus/h264-high-320x240.h264
cd /work/main
/usr/bin/ffmpeg -hide_banner -loglevel verbose -c:v h264_v4l2m2m -i $C -f framemd5 - 2>&1 | tail -60
echo ===== passthrough
/usr/bin/ffmpeg -hide_banner -loglevel error -c:v h264_v4l2m2m -i $C -fps_mode passthrough -f framemd5 - 2>&1 | tail -40
