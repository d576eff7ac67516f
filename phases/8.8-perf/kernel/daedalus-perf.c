// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.8 layer, performance: pipelining, and 10-bit,
 * 4:2:2 and 4:4:4 CAPTURE.
 *
 * Pipelining: the m2m layer runs each open file's pump in two halves
 * (daedalus_m2m.pipelined, daedalus_m2m_feed_pump()), so the next FEED is
 * decoding in the daemon while a FETCH lays the previous frame out into its
 * CAPTURE buffer; daedalusd runs a stream's FEEDs and its FETCHes apart
 * (StatefulHandler.order_key). Up to phase 8.7 a file has one request in
 * the daemon at a time.
 *
 * Formats: offers V4L2_PIX_FMT_P010 on CAPTURE (an opt-in entry of the decoded
 * format table, daedalus-formats.c): one plane, luma rows then interleaved
 * CbCr rows at half height, 16-bit little-endian samples with the 10 bits
 * in the upper bits, which is what the daemon writes for a 9- or 10-bit
 * 4:2:0 stream (struct daedalus_frame_info, DAEDALUS_PIXFMT_P010). Until
 * this layer, phase 8.5 refuses such a stream ("CAPTURE offers 8-bit
 * only"); with it, the first 10-bit frame sets CAPTURE to P010 and raises
 * V4L2_EVENT_SOURCE_CHANGE, and from then on CAPTURE offers P010 only
 * (ENUM_FMT, TRY_FMT and S_FMT, daedalus_ctx.stream_fourcc): a client that
 * asks for NV12 gets P010 back from S_FMT, and buffers sized for NV12 are
 * refused at STREAMON.
 *
 * The same for 8-bit 4:2:2 and 4:4:4 streams (H.264 High 4:2:2 and High
 * 4:4:4 Predictive, VP9 profile 1, AV1 high and professional), which the
 * daemon of phase 8.8 delivers as DAEDALUS_PIXFMT_NV16 and _NV24 (its
 * daedalus.layouts entry points): V4L2_PIX_FMT_NV16 (CbCr rows at full
 * height, as long as luma rows) and V4L2_PIX_FMT_NV24 (CbCr rows at full
 * height, twice as long), one plane each (pixfmt-yuv-planar.rst), sized
 * by the format table (daedalus_decoded_size()). Deeper 4:2:2 and 4:4:4
 * have no single-plane V4L2 format on these kernels: the daemon refuses
 * them. Before the stream's header, NV12, P010, NV16 and NV24 are all
 * offered, in that order.
 *
 * No state and no lock: the format bits and the pipelined flag are set
 * by init (and the bits cleared by exit) before anything is published and
 * after the last user is gone (daedalus_decoded_fmt_enable(), struct
 * daedalus_m2m).
 */

#include "daedalus.h"
#include "daedalus-m2m.h"

/* The opt-in decoded formats this phase brings (enum daedalus_pixfmt). */
static const u32 daedalus_perf_pixfmts[] = {
	DAEDALUS_PIXFMT_P010,
	DAEDALUS_PIXFMT_NV16,
	DAEDALUS_PIXFMT_NV24,
};

static void daedalus_perf_exit(struct daedalus_dev *dev)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_perf_pixfmts); i++)
		daedalus_decoded_fmt_disable(dev, daedalus_perf_pixfmts[i]);
}

static int daedalus_perf_init(struct daedalus_dev *dev)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(daedalus_perf_pixfmts); i++) {
		ret = daedalus_decoded_fmt_enable(dev, daedalus_perf_pixfmts[i]);
		if (ret) {
			daedalus_perf_exit(dev);
			return ret;
		}
	}
	daedalus_dev_m2m(dev)->pipelined = true;
	return 0;
}

const struct daedalus_layer daedalus_perf_layer = {
	.name	= "8.8-perf",
	.init	= daedalus_perf_init,
	.exit	= daedalus_perf_exit,
};
