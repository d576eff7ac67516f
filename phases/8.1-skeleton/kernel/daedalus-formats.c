// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: coded (OUTPUT) and decoded (CAPTURE) format tables.
 *
 * Codec specifics are data here, never switch statements: a codec is one
 * entry of daedalus_coded_fmts[], the kernel's only table of codecs (its
 * fourcc, wire codec id, name, buffer size, bytestream flags, frame sizes
 * and controls; later layers read it, they keep no table of their own). What
 * a codec has of its own beyond that table row lives in its codec file
 * (daedalus-vp9.c, daedalus-h264.c, daedalus-av1.c: the controls).
 *
 * An entry marked opt_in is a codec a later phase brings to the node: the
 * node offers it only once that layer's @init enabled it on the device
 * (daedalus_coded_fmt_enable()); until then enumeration, lookup by fourcc,
 * TRY_FMT / S_FMT and ENUM_FRAMESIZES skip it as if the table lacked it, so
 * the earlier phases' node offers exactly what it always did. AV1 is one:
 * the roadmap puts it on the node with phase 8.6 (see daedalus-dmabuf.c).
 * Lookup by wire codec (daedalus_coded_fmt_by_codec()) does not look at
 * opt_in: it names codecs for the daemon, not formats of the node.
 *
 * Colorimetry: the OUTPUT format keeps the application's (TRY_FMT / S_FMT,
 * daedalus_fill_coded_colour()), and a stream's own colour description,
 * which the daemon reports with each frame as ITU-T H.273 code points,
 * becomes V4L2's through one table, daedalus_colour_map
 * (daedalus_stream_colour(), used where a layer learns a stream's format).
 */
#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/kernel.h>
#include <linux/minmax.h>
#include <linux/string.h>
#include <media/v4l2-common.h>

#include "daedalus.h"

/* 1 MiB holds any 1080p VP9/H.264/AV1 frame at sane bitrates. */
#define DAEDALUS_CODED_BUF_SIZE	SZ_1M

/*
 * Every picture size the wire carries (DAEDALUS_MAX_WIDTH x
 * DAEDALUS_MAX_HEIGHT, the daemon refuses larger frames), in steps of two
 * (4:2:0 and 4:2:2 chroma). Every codec takes them all: what a stream may code beyond
 * that (VP9 and AV1 up to 65536 x 65536, H.264 as its level allows) is the
 * daemon's decoders' to refuse.
 */
#define DAEDALUS_FRMSIZE_WIRE {				\
	.min_width	= DAEDALUS_MIN_WIDTH,		\
	.max_width	= DAEDALUS_MAX_WIDTH,		\
	.step_width	= DAEDALUS_SIZE_STEP,		\
	.min_height	= DAEDALUS_MIN_HEIGHT,		\
	.max_height	= DAEDALUS_MAX_HEIGHT,		\
	.step_height	= DAEDALUS_SIZE_STEP,		\
}

static const struct daedalus_coded_fmt daedalus_coded_fmts[] = {
	{
		.fourcc			= V4L2_PIX_FMT_VP9,
		.codec			= DAEDALUS_CODEC_VP9,
		.name			= "VP9",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION,
		.frmsize		= DAEDALUS_FRMSIZE_WIRE,
		.ctrls			= &daedalus_vp9_ctrls,
	},
	{
		.fourcc			= V4L2_PIX_FMT_H264,
		.codec			= DAEDALUS_CODEC_H264,
		.name			= "H.264",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION |
					  V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM,
		.frmsize		= DAEDALUS_FRMSIZE_WIRE,
		.ctrls			= &daedalus_h264_ctrls,
	},
	{
		/* One temporal unit per OUTPUT buffer: no continuous bytestream. */
		.fourcc			= DAEDALUS_PIX_FMT_AV1,
		.codec			= DAEDALUS_CODEC_AV1,
		.name			= "AV1",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION,
		.frmsize		= DAEDALUS_FRMSIZE_WIRE,
		.ctrls			= &daedalus_av1_ctrls,
		.opt_in			= true,
	},
};

/* Decoded pictures: whatever size the coded ones have. */
static const struct v4l2_frmsize_stepwise daedalus_decoded_frmsize =
	DAEDALUS_FRMSIZE_WIRE;

/* One bit of daedalus_dev.coded_fmts_enabled per entry. */
static_assert(ARRAY_SIZE(daedalus_coded_fmts) <= BITS_PER_LONG);

/*
 * Decoded formats, one plane each: the luma rows, then the interleaved CbCr
 * rows (the daemon's layouts, enum daedalus_pixfmt). NV12 is the node's
 * own; the others are opt-in entries a later phase enables (phase 8.8:
 * P010, NV16, NV24). ENUM_FMT lists them in this order.
 */
static const struct daedalus_decoded_fmt daedalus_decoded_fmts[] = {
	{
		.fourcc		= V4L2_PIX_FMT_NV12,
		.pixfmt		= DAEDALUS_PIXFMT_NV12,
		.name		= "NV12",
		.chroma		= "4:2:0",
		.depth		= 8,
		.bpp_num	= 1,
		.chroma_hdiv	= 2,
		.chroma_vdiv	= 2,
	},
	{
		/* 10 bits in the upper bits of 16-bit little-endian samples */
		.fourcc		= V4L2_PIX_FMT_P010,
		.pixfmt		= DAEDALUS_PIXFMT_P010,
		.name		= "P010",
		.chroma		= "4:2:0",
		.depth		= 10,
		.bpp_num	= 2,
		.chroma_hdiv	= 2,
		.chroma_vdiv	= 2,
		.opt_in		= true,
	},
	{
		/* chroma rows at full height */
		.fourcc		= V4L2_PIX_FMT_NV16,
		.pixfmt		= DAEDALUS_PIXFMT_NV16,
		.name		= "NV16",
		.chroma		= "4:2:2",
		.depth		= 8,
		.bpp_num	= 1,
		.chroma_hdiv	= 2,
		.chroma_vdiv	= 1,
		.opt_in		= true,
	},
	{
		/* chroma rows at full height and twice a luma row's stride */
		.fourcc		= V4L2_PIX_FMT_NV24,
		.pixfmt		= DAEDALUS_PIXFMT_NV24,
		.name		= "NV24",
		.chroma		= "4:4:4",
		.depth		= 8,
		.bpp_num	= 1,
		.chroma_hdiv	= 1,
		.chroma_vdiv	= 1,
		.opt_in		= true,
	},
};

/* One bit of daedalus_dev.decoded_fmts_enabled per entry. */
static_assert(ARRAY_SIZE(daedalus_decoded_fmts) <= BITS_PER_LONG);

/* Whether @dev offers entry @i of daedalus_coded_fmts[]. */
static bool daedalus_coded_fmt_offered(const struct daedalus_dev *dev,
				       unsigned int i)
{
	return !daedalus_coded_fmts[i].opt_in ||
	       (dev->coded_fmts_enabled & BIT(i));
}

/*
 * daedalus_coded_fmt_by_index() - the @index-th coded format @dev offers
 *
 * Entries @dev does not offer do not count. Returns NULL past the end.
 */
const struct daedalus_coded_fmt *
daedalus_coded_fmt_by_index(const struct daedalus_dev *dev, unsigned int index)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++) {
		if (!daedalus_coded_fmt_offered(dev, i))
			continue;
		if (!index--)
			return &daedalus_coded_fmts[i];
	}
	return NULL;
}

/**
 * daedalus_coded_fmt_by_codec() - the table's entry for a wire codec
 * @codec: enum daedalus_codec, as a request names it
 *
 * Return: the entry, also for a codec the node does not offer (an opt-in
 * entry no layer enabled: it is still decoded through the debugfs round
 * trip of phase 8.4), or NULL for a value that names no codec.
 */
const struct daedalus_coded_fmt *daedalus_coded_fmt_by_codec(u32 codec)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++)
		if (daedalus_coded_fmts[i].codec == codec)
			return &daedalus_coded_fmts[i];
	return NULL;
}

/* The coded format @dev offers as @fourcc, or NULL. */
const struct daedalus_coded_fmt *
daedalus_find_coded_fmt(const struct daedalus_dev *dev, u32 fourcc)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++)
		if (daedalus_coded_fmts[i].fourcc == fourcc &&
		    daedalus_coded_fmt_offered(dev, i))
			return &daedalus_coded_fmts[i];
	return NULL;
}

/* The index of the opt-in entry of wire codec @codec, or -EINVAL. */
static int daedalus_opt_in_index(u32 codec)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++)
		if (daedalus_coded_fmts[i].codec == codec &&
		    daedalus_coded_fmts[i].opt_in)
			return i;
	return -EINVAL;
}

/**
 * daedalus_coded_fmt_enable() - offer an opt-in codec on @dev
 * @dev: the device.
 * @codec: enum daedalus_codec of an entry marked opt_in.
 *
 * The hook through which a later layer brings its codec to the node: its
 * @init calls this and its @exit calls daedalus_coded_fmt_disable(). No
 * lock: @init runs before any layer's @publish and @exit after the last
 * user is gone (see daedalus_layer_priv()), so no ioctl reads
 * @dev->coded_fmts_enabled while it changes. Process context.
 *
 * Return: 0, or -EINVAL when no opt-in entry has @codec (an entry without
 * opt_in is always offered).
 */
int daedalus_coded_fmt_enable(struct daedalus_dev *dev, u32 codec)
{
	int i = daedalus_opt_in_index(codec);

	if (i < 0)
		return i;
	dev->coded_fmts_enabled |= BIT(i);
	return 0;
}

/**
 * daedalus_coded_fmt_disable() - undo daedalus_coded_fmt_enable()
 * @dev: the device.
 * @codec: the codec the same layer enabled.
 *
 * From the enabling layer's @exit only (no lock, as for enabling).
 */
void daedalus_coded_fmt_disable(struct daedalus_dev *dev, u32 codec)
{
	int i = daedalus_opt_in_index(codec);

	if (i >= 0)
		dev->coded_fmts_enabled &= ~BIT(i);
}

/* Whether @dev offers entry @i of daedalus_decoded_fmts[]. */
static bool daedalus_decoded_fmt_offered(const struct daedalus_dev *dev,
					 unsigned int i)
{
	return !daedalus_decoded_fmts[i].opt_in ||
	       (dev->decoded_fmts_enabled & BIT(i));
}

/* Whether @ctx's CAPTURE offers entry @i now (see daedalus_ctx). */
static bool daedalus_decoded_fmt_allowed(const struct daedalus_ctx *ctx,
					 unsigned int i)
{
	u32 stream = READ_ONCE(ctx->stream_fourcc);

	if (stream)
		return daedalus_decoded_fmts[i].fourcc == stream;
	return daedalus_decoded_fmt_offered(ctx->dev, i);
}

/* The index of the opt-in entry of wire layout @pixfmt, or -EINVAL. */
static int daedalus_decoded_opt_in_index(u32 pixfmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].pixfmt == pixfmt &&
		    daedalus_decoded_fmts[i].opt_in)
			return i;
	return -EINVAL;
}

/**
 * daedalus_decoded_fmt_enable() - offer an opt-in decoded format on @dev
 * @dev: the device.
 * @pixfmt: enum daedalus_pixfmt of an entry marked opt_in.
 *
 * As daedalus_coded_fmt_enable(), for CAPTURE: a later layer's @init
 * brings its format, its @exit calls daedalus_decoded_fmt_disable().
 *
 * Return: 0, or -EINVAL when no opt-in entry has @pixfmt.
 */
int daedalus_decoded_fmt_enable(struct daedalus_dev *dev, u32 pixfmt)
{
	int i = daedalus_decoded_opt_in_index(pixfmt);

	if (i < 0)
		return i;
	dev->decoded_fmts_enabled |= BIT(i);
	return 0;
}

/**
 * daedalus_decoded_fmt_disable() - undo daedalus_decoded_fmt_enable()
 * @dev: the device.
 * @pixfmt: the layout the same layer enabled.
 *
 * From the enabling layer's @exit only (no lock, as for enabling).
 */
void daedalus_decoded_fmt_disable(struct daedalus_dev *dev, u32 pixfmt)
{
	int i = daedalus_decoded_opt_in_index(pixfmt);

	if (i >= 0)
		dev->decoded_fmts_enabled &= ~BIT(i);
}

/*
 * daedalus_decoded_fmt_by_index() - the @index-th CAPTURE format @ctx offers
 *
 * Entries it does not offer now do not count. Returns NULL past the end.
 */
const struct daedalus_decoded_fmt *
daedalus_decoded_fmt_by_index(const struct daedalus_ctx *ctx, unsigned int index)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++) {
		if (!daedalus_decoded_fmt_allowed(ctx, i))
			continue;
		if (!index--)
			return &daedalus_decoded_fmts[i];
	}
	return NULL;
}

/* The CAPTURE format @fourcc if @ctx offers it now, else NULL. */
const struct daedalus_decoded_fmt *
daedalus_find_decoded_fmt(const struct daedalus_ctx *ctx, u32 fourcc)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].fourcc == fourcc &&
		    daedalus_decoded_fmt_allowed(ctx, i))
			return &daedalus_decoded_fmts[i];
	return NULL;
}

/* The CAPTURE format @dev offers for the daemon's @pixfmt frames, or NULL. */
const struct daedalus_decoded_fmt *
daedalus_decoded_fmt_by_pixfmt(const struct daedalus_dev *dev, u32 pixfmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].pixfmt == pixfmt &&
		    daedalus_decoded_fmt_offered(dev, i))
			return &daedalus_decoded_fmts[i];
	return NULL;
}

/**
 * daedalus_decoded_fmt_by_wire() - the table's entry for a wire layout
 * @pixfmt: enum daedalus_pixfmt, as a frame of the daemon names it.
 *
 * As daedalus_coded_fmt_by_codec(): also an entry the node does not offer
 * (to validate and name the daemon's frames).
 *
 * Return: the entry, or NULL for a value that names no layout.
 */
const struct daedalus_decoded_fmt *daedalus_decoded_fmt_by_wire(u32 pixfmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].pixfmt == pixfmt)
			return &daedalus_decoded_fmts[i];
	return NULL;
}

/**
 * daedalus_decoded_size() - bytes of a frame buffer in format @fmt
 * @fmt: a decoded format.
 * @bytesperline: the stride of its luma rows.
 * @height: its luma rows (even: the decoded sizes step by 2).
 *
 * The luma plane, then the CbCr plane: @height / @fmt->chroma_vdiv rows
 * of 2 / @fmt->chroma_hdiv times @bytesperline (enum daedalus_pixfmt; what
 * the daemon writes for a FETCH of that geometry).
 *
 * Return: the byte count (NV12: @bytesperline * @height * 3 / 2).
 */
u32 daedalus_decoded_size(const struct daedalus_decoded_fmt *fmt,
			  u32 bytesperline, u32 height)
{
	return bytesperline * height +
	       bytesperline * 2 / fmt->chroma_hdiv * (height / fmt->chroma_vdiv);
}

/**
 * daedalus_frmsize() - the picture sizes @dev takes in format @fourcc
 * @dev: the device.
 * @fourcc: a coded format @dev offers, or a decoded format.
 *
 * Return: the coded format's table entry's sizes, the decoded formats'
 * sizes, or NULL for a format @dev does not offer.
 */
const struct v4l2_frmsize_stepwise *
daedalus_frmsize(const struct daedalus_dev *dev, u32 fourcc)
{
	const struct daedalus_coded_fmt *fmt;
	unsigned int i;

	fmt = daedalus_find_coded_fmt(dev, fourcc);
	if (fmt)
		return &fmt->frmsize;
	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].fourcc == fourcc &&
		    daedalus_decoded_fmt_offered(dev, i))
			return &daedalus_decoded_frmsize;
	return NULL;
}

/* Steps are powers of two (ALIGN()); each table's sizes are. */
static void daedalus_clamp_size(struct v4l2_pix_format_mplane *pix,
				const struct v4l2_frmsize_stepwise *size)
{
	pix->width = clamp_t(u32, ALIGN(pix->width, size->step_width),
			     size->min_width, size->max_width);
	pix->height = clamp_t(u32, ALIGN(pix->height, size->step_height),
			      size->min_height, size->max_height);
	pix->field = V4L2_FIELD_NONE;
	pix->num_planes = 1;
	memset(pix->reserved, 0, sizeof(pix->reserved));
	memset(pix->plane_fmt[0].reserved, 0,
	       sizeof(pix->plane_fmt[0].reserved));
}

/*
 * The colorimetry of coded data is the application's to give
 * (pixfmt-v4l2.rst: set "by the application for output streams"), and what
 * S_FMT(OUTPUT) hands to CAPTURE: kept when valid. V4L2_COLORSPACE_DEFAULT
 * lets the driver fill it in (colorspaces-defs.rst): Rec. 709, the node's
 * default, as for a value out of range and the deprecated BT878 ("No driver
 * will ever return this"). The other three fields are kept when valid, else
 * *_DEFAULT (derived from the colorspace). On TRY_FMT / S_FMT the V4L2 core
 * has already done most of this (v4l_sanitize_colorspace(), 6.1 and 6.12):
 * it turns an invalid field into *_DEFAULT and, when the colorspace is
 * DEFAULT or invalid, resets all four, so an application's xfer_func,
 * ycbcr_enc and quantization survive only under a valid colorspace. The
 * checks here keep the function right for formats the core did not see
 * (daedalus_default_fmts()).
 */
static void daedalus_fill_coded_colour(struct v4l2_pix_format_mplane *pix)
{
	if (!v4l2_is_colorspace_valid(pix->colorspace) ||
	    pix->colorspace == V4L2_COLORSPACE_BT878)
		pix->colorspace = V4L2_COLORSPACE_REC709;
	if (!v4l2_is_xfer_func_valid(pix->xfer_func))
		pix->xfer_func = V4L2_XFER_FUNC_DEFAULT;
	if (!v4l2_is_ycbcr_enc_valid(pix->ycbcr_enc))
		pix->ycbcr_enc = V4L2_YCBCR_ENC_DEFAULT;
	if (!v4l2_is_quant_valid(pix->quantization))
		pix->quantization = V4L2_QUANTIZATION_DEFAULT;
}

/*
 * daedalus_fill_coded_fmt() - make @pix a valid OUTPUT format of @dev
 *
 * A fourcc @dev does not offer becomes the first coded format
 * (VIDIOC_TRY_FMT never fails on a format it does not know). Coded data has
 * no line stride. The colorimetry is the application's, when valid.
 */
void daedalus_fill_coded_fmt(const struct daedalus_dev *dev,
			     struct v4l2_pix_format_mplane *pix)
{
	const struct daedalus_coded_fmt *fmt;
	u32 limit;

	fmt = daedalus_find_coded_fmt(dev, pix->pixelformat);
	if (!fmt)
		fmt = daedalus_coded_fmt_by_index(dev, 0);
	pix->pixelformat = fmt->fourcc;
	daedalus_clamp_size(pix, &fmt->frmsize);
	daedalus_fill_coded_colour(pix);
	pix->plane_fmt[0].bytesperline = 0;
	/*
	 * A coded frame takes about what its raw picture takes at most, so
	 * the buffer an application may ask for is bounded by the NV12 size
	 * of the coded picture (never below the codec's minimum, never above
	 * 32 MiB): a small stream cannot pin large buffers.
	 */
	limit = clamp_t(u32, pix->width * pix->height * 3 / 2,
			fmt->min_buffer_size, SZ_32M);
	pix->plane_fmt[0].sizeimage = clamp_t(u32, pix->plane_fmt[0].sizeimage,
					      fmt->min_buffer_size, limit);
}

/*
 * daedalus_fill_decoded_fmt() - make @pix a valid CAPTURE format
 *
 * One plane: the luma plane followed by the interleaved chroma plane, whose
 * rows and stride the format's entry gives (daedalus_decoded_size()).
 * Rows are padded to a multiple of 4 bytes only: the layout GStreamer
 * assumes for a frame without a video meta (its default NV12 stride). With
 * a wider stride, GStreamer 1.22 copies each frame for a sink that takes no
 * video meta (filesink, appsink) into a buffer as large as the padded one,
 * and such a sink writes frames as wide as the stride.
 */
void daedalus_fill_decoded_fmt(const struct daedalus_ctx *ctx,
			       struct v4l2_pix_format_mplane *pix)
{
	const struct daedalus_decoded_fmt *fmt;
	u32 stride;

	fmt = daedalus_find_decoded_fmt(ctx, pix->pixelformat);
	if (!fmt)
		fmt = daedalus_decoded_fmt_by_index(ctx, 0);
	pix->pixelformat = fmt->fourcc;
	daedalus_clamp_size(pix, &daedalus_decoded_frmsize);
	stride = ALIGN(pix->width * fmt->bpp_num, 4);
	pix->plane_fmt[0].bytesperline = stride;
	pix->plane_fmt[0].sizeimage = daedalus_decoded_size(fmt, stride,
							    pix->height);
}

/* Default formats of a new file handle: VP9 320x240 in, NV12 out. */
void daedalus_default_fmts(struct daedalus_ctx *ctx)
{
	struct v4l2_pix_format_mplane *out = &ctx->out_fmt;
	struct v4l2_pix_format_mplane *cap = &ctx->cap_fmt;

	memset(out, 0, sizeof(*out));
	out->pixelformat = daedalus_coded_fmt_by_index(ctx->dev, 0)->fourcc;
	out->width = 320;
	out->height = 240;
	out->colorspace = V4L2_COLORSPACE_REC709;
	daedalus_fill_coded_fmt(ctx->dev, out);

	memset(cap, 0, sizeof(*cap));
	cap->pixelformat = V4L2_PIX_FMT_NV12;
	cap->width = out->width;
	cap->height = out->height;
	cap->colorspace = out->colorspace;
	daedalus_fill_decoded_fmt(ctx, cap);
}

/*
 * ITU-T H.273 code points (and FFmpeg's AVColorRange) to V4L2 colorimetry,
 * field by field, indexed by the code point. An entry is the V4L2 value with
 * the same definition (colorspaces-details.rst: chromaticities, transfer
 * function, Y'CbCr encoding, quantization); 0, V4L2's *_DEFAULT, where V4L2
 * has none (H.273's "unspecified" and reserved values, gamma 2.2 and 2.8,
 * HLG, P3-D65, YCgCo ...): the stream's value then says nothing V4L2 can
 * carry. A code point is a byte on the wire, so each array has an entry for
 * every value the daemon can send. Model: amphion's vpu_color.c.
 */
static const struct daedalus_colour_map {
	u8 colorspace[256];	/* by ColourPrimaries */
	u8 xfer_func[256];	/* by TransferCharacteristics */
	u8 ycbcr_enc[256];	/* by MatrixCoefficients */
	u8 quantization[256];	/* by AVColorRange */
} daedalus_colour_map = {
	.colorspace = {
		[1]	= V4L2_COLORSPACE_REC709,	 /* BT.709 */
		[4]	= V4L2_COLORSPACE_470_SYSTEM_M,	 /* BT.470 System M */
		[5]	= V4L2_COLORSPACE_470_SYSTEM_BG, /* BT.470 System B, G */
		[6]	= V4L2_COLORSPACE_SMPTE170M,	 /* BT.601 525, SMPTE 170M */
		[7]	= V4L2_COLORSPACE_SMPTE240M,	 /* SMPTE 240M */
		[9]	= V4L2_COLORSPACE_BT2020,	 /* BT.2020, BT.2100 */
		[11]	= V4L2_COLORSPACE_DCI_P3,	 /* SMPTE RP 431-2 */
	},
	.xfer_func = {
		[1]	= V4L2_XFER_FUNC_709,		/* BT.709 */
		[6]	= V4L2_XFER_FUNC_709,		/* BT.601, SMPTE 170M */
		[7]	= V4L2_XFER_FUNC_SMPTE240M,	/* SMPTE 240M */
		[8]	= V4L2_XFER_FUNC_NONE,		/* linear */
		[13]	= V4L2_XFER_FUNC_SRGB,		/* IEC 61966-2-1 (sRGB) */
		[14]	= V4L2_XFER_FUNC_709,		/* BT.2020, 10 bits */
		[15]	= V4L2_XFER_FUNC_709,		/* BT.2020, 12 bits */
		[16]	= V4L2_XFER_FUNC_SMPTE2084,	/* SMPTE ST 2084 (PQ) */
	},
	.ycbcr_enc = {
		[1]	= V4L2_YCBCR_ENC_709,		/* BT.709 */
		[5]	= V4L2_YCBCR_ENC_601,		/* BT.601 625, BT.470 B, G */
		[6]	= V4L2_YCBCR_ENC_601,		/* BT.601 525, SMPTE 170M */
		[7]	= V4L2_YCBCR_ENC_SMPTE240M,	/* SMPTE 240M */
		[9]	= V4L2_YCBCR_ENC_BT2020,	/* BT.2020 non-constant */
		[10]	= V4L2_YCBCR_ENC_BT2020_CONST_LUM, /* BT.2020 constant */
	},
	.quantization = {
		[DAEDALUS_RANGE_LIMITED]	= V4L2_QUANTIZATION_LIM_RANGE,
		[DAEDALUS_RANGE_FULL]		= V4L2_QUANTIZATION_FULL_RANGE,
	},
};

/**
 * daedalus_stream_colour() - the CAPTURE colorimetry of a stream's frame
 * @cap: the CAPTURE format whose four colorimetry fields are set.
 * @app: the OUTPUT format, with the application's colorimetry.
 * @f: the frame, as the daemon described it.
 *
 * Field by field: what the stream signals where V4L2 has a name for it
 * (daedalus_colour_map), else the application's value. The daemon is not
 * trusted: a code point the table does not name counts as not signalled,
 * so @cap only ever gets a value of the table or of @app. Called by the
 * layer that learns a stream's format (phase 8.5, at SOURCE_CHANGE) under
 * the lock that guards @cap; does not sleep.
 */
void daedalus_stream_colour(struct v4l2_pix_format_mplane *cap,
			    const struct v4l2_pix_format_mplane *app,
			    const struct daedalus_frame_info *f)
{
	const struct daedalus_colour_map *map = &daedalus_colour_map;

	cap->colorspace = map->colorspace[f->primaries] ?: app->colorspace;
	cap->xfer_func = map->xfer_func[f->transfer] ?: app->xfer_func;
	cap->ycbcr_enc = map->ycbcr_enc[f->matrix] ?: app->ycbcr_enc;
	cap->quantization = map->quantization[f->range] ?: app->quantization;
}
