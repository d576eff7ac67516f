// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.8 layer, 10-bit CAPTURE.
 *
 * Offers V4L2_PIX_FMT_P010 on CAPTURE (an opt-in entry of the decoded
 * format table, daedalus-formats.c): one plane, luma rows then interleaved
 * CbCr rows at half height, 16-bit little-endian samples with the 10 bits
 * in the upper bits, which is what the daemon writes for a 9- or 10-bit
 * 4:2:0 stream (struct daedalus_frame_info, DAEDALUS_PIXFMT_P010). Until
 * this layer, phase 8.5 refuses such a stream ("CAPTURE offers 8-bit
 * only"); with it, the first 10-bit frame sets CAPTURE to P010 and raises
 * V4L2_EVENT_SOURCE_CHANGE, and from then on CAPTURE offers P010 only
 * (ENUM_FMT, TRY_FMT and S_FMT, daedalus_ctx.stream_fourcc): a client that
 * asks for NV12 gets P010 back from S_FMT, and buffers sized for NV12 are
 * refused at STREAMON. Before the stream's header, NV12 and P010 are both
 * offered, NV12 first.
 *
 * No state and no lock: the format bit is set by init and cleared by exit,
 * before anything is published and after the last user is gone
 * (daedalus_decoded_fmt_enable()).
 */

#include "daedalus.h"

static int daedalus_p010_init(struct daedalus_dev *dev)
{
	return daedalus_decoded_fmt_enable(dev, DAEDALUS_PIXFMT_P010);
}

static void daedalus_p010_exit(struct daedalus_dev *dev)
{
	daedalus_decoded_fmt_disable(dev, DAEDALUS_PIXFMT_P010);
}

const struct daedalus_layer daedalus_p010_layer = {
	.name	= "8.8-perf",
	.init	= daedalus_p010_init,
	.exit	= daedalus_p010_exit,
};
