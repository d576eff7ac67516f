// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: H.264, the codec's own data.
 *
 * Its row of the codec table is in daedalus-formats.c; this file holds what
 * the row points to: the H.264 stateless controls (parameter sets, scaling
 * matrix, prediction weights, slice and decode parameters, and the two
 * menus saying how the bitstream comes). They do nothing on this stateful
 * node, see struct daedalus_codec_ctrls: the daemon parses the NAL units
 * itself.
 *
 * The menus offer the one value that describes what the node takes: whole
 * access units (frame-based), NAL units behind Annex B start codes, as the
 * 'H264' format's byte stream has them.
 */
#include <linux/kernel.h>
#include <media/v4l2-ctrls.h>

#include "daedalus.h"

static const struct v4l2_ctrl_config daedalus_h264_ctrl_cfgs[] = {
	{ .id = V4L2_CID_STATELESS_H264_SPS },
	{ .id = V4L2_CID_STATELESS_H264_PPS },
	{ .id = V4L2_CID_STATELESS_H264_SCALING_MATRIX },
	{ .id = V4L2_CID_STATELESS_H264_PRED_WEIGHTS },
	{ .id = V4L2_CID_STATELESS_H264_SLICE_PARAMS },
	{ .id = V4L2_CID_STATELESS_H264_DECODE_PARAMS },
	{
		.id	= V4L2_CID_STATELESS_H264_DECODE_MODE,
		.min	= V4L2_STATELESS_H264_DECODE_MODE_FRAME_BASED,
		.max	= V4L2_STATELESS_H264_DECODE_MODE_FRAME_BASED,
		.def	= V4L2_STATELESS_H264_DECODE_MODE_FRAME_BASED,
	},
	{
		.id	= V4L2_CID_STATELESS_H264_START_CODE,
		.min	= V4L2_STATELESS_H264_START_CODE_ANNEX_B,
		.max	= V4L2_STATELESS_H264_START_CODE_ANNEX_B,
		.def	= V4L2_STATELESS_H264_START_CODE_ANNEX_B,
	},
};

const struct daedalus_codec_ctrls daedalus_h264_ctrls = {
	.cfgs	= daedalus_h264_ctrl_cfgs,
	.num	= ARRAY_SIZE(daedalus_h264_ctrl_cfgs),
};
