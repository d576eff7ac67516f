// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: AV1, the codec's own data.
 *
 * Its row of the codec table is in daedalus-formats.c (opt-in: phase 8.6
 * brings AV1 to the node); this file holds what the row points to: the AV1
 * stateless controls (sequence header, tile group entries, frame header,
 * film grain). They do nothing on this stateful node, see struct
 * daedalus_codec_ctrls: the daemon parses the OBUs itself.
 *
 * The AV1 stateless uAPI is 6.5's: where the running kernel lacks it (6.1)
 * the list is empty (DAEDALUS_IF_AV1_UAPI(), compat.h) and the node offers
 * AV1 without controls.
 */
#include <linux/kernel.h>
#include <media/v4l2-ctrls.h>

#include "daedalus.h"

static const struct v4l2_ctrl_config daedalus_av1_ctrl_cfgs[] = {
	DAEDALUS_IF_AV1_UAPI({ .id = V4L2_CID_STATELESS_AV1_SEQUENCE },
			     /* One entry per tile of a tile group, up to AV1's most. */
			     { .id = V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY,
			       .dims = { V4L2_AV1_MAX_TILE_COUNT } },
			     { .id = V4L2_CID_STATELESS_AV1_FRAME },
			     { .id = V4L2_CID_STATELESS_AV1_FILM_GRAIN })
};

const struct daedalus_codec_ctrls daedalus_av1_ctrls = {
	.cfgs	= daedalus_av1_ctrl_cfgs,
	.num	= ARRAY_SIZE(daedalus_av1_ctrl_cfgs),
};
