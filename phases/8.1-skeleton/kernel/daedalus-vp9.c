// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: VP9, the codec's own data.
 *
 * Its row of the codec table is in daedalus-formats.c; this file holds what
 * the row points to: the VP9 stateless controls (the uncompressed header's
 * frame parameters and the compressed header's probability updates). They
 * do nothing on this stateful node, see struct daedalus_codec_ctrls: the
 * daemon parses each frame's headers itself.
 */
#include <linux/kernel.h>
#include <media/v4l2-ctrls.h>

#include "daedalus.h"

static const struct v4l2_ctrl_config daedalus_vp9_ctrl_cfgs[] = {
	{ .id = V4L2_CID_STATELESS_VP9_FRAME },
	{ .id = V4L2_CID_STATELESS_VP9_COMPRESSED_HDR },
};

const struct daedalus_codec_ctrls daedalus_vp9_ctrls = {
	.cfgs	= daedalus_vp9_ctrl_cfgs,
	.num	= ARRAY_SIZE(daedalus_vp9_ctrl_cfgs),
};
