// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: coded (OUTPUT) and decoded (CAPTURE) format tables.
 *
 * Codec specifics are data here, never switch statements: a codec is one
 * entry of daedalus_coded_fmts[], the kernel's only table of codecs (its
 * fourcc, wire codec id, name, buffer size and bytestream flags; later
 * layers read it, they keep no table of their own). An entry whose fourcc
 * is 0 is not offered by the running kernel (see DAEDALUS_PIX_FMT_AV1 in
 * compat.h) and is skipped by enumeration and lookup alike.
 */
#include <linux/kernel.h>
#include <linux/minmax.h>
#include <linux/string.h>

#include "daedalus.h"

/* 1 MiB holds any 1080p VP9/H.264/AV1 frame at sane bitrates. */
#define DAEDALUS_CODED_BUF_SIZE	SZ_1M

static const struct daedalus_coded_fmt daedalus_coded_fmts[] = {
	{
		.fourcc			= V4L2_PIX_FMT_VP9,
		.codec			= DAEDALUS_CODEC_VP9,
		.name			= "VP9",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION,
	},
	{
		.fourcc			= V4L2_PIX_FMT_H264,
		.codec			= DAEDALUS_CODEC_H264,
		.name			= "H.264",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION |
					  V4L2_FMT_FLAG_CONTINUOUS_BYTESTREAM,
	},
	{
		.fourcc			= DAEDALUS_PIX_FMT_AV1,
		.codec			= DAEDALUS_CODEC_AV1,
		.name			= "AV1",
		.min_buffer_size	= DAEDALUS_CODED_BUF_SIZE,
		.fmt_flags		= V4L2_FMT_FLAG_DYN_RESOLUTION,
	},
};

static const struct daedalus_decoded_fmt daedalus_decoded_fmts[] = {
	{
		.fourcc		= V4L2_PIX_FMT_NV12,
		.pixfmt		= DAEDALUS_PIXFMT_NV12,
		.depth		= 8,
		.bpp_num	= 1,
	},
};

/*
 * daedalus_coded_fmt_by_index() - the @index-th coded format this kernel offers
 *
 * Entries with a zero fourcc do not count. Returns NULL past the end.
 */
const struct daedalus_coded_fmt *daedalus_coded_fmt_by_index(unsigned int index)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++) {
		if (!daedalus_coded_fmts[i].fourcc)
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
 * Return: the entry, also for a codec the running kernel has no V4L2 format
 * for (its fourcc is 0: it is still decoded through the debugfs round trip),
 * or NULL for a value that names no codec.
 */
const struct daedalus_coded_fmt *daedalus_coded_fmt_by_codec(u32 codec)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++)
		if (daedalus_coded_fmts[i].codec == codec)
			return &daedalus_coded_fmts[i];
	return NULL;
}

const struct daedalus_coded_fmt *daedalus_find_coded_fmt(u32 fourcc)
{
	unsigned int i;

	if (!fourcc)
		return NULL;
	for (i = 0; i < ARRAY_SIZE(daedalus_coded_fmts); i++)
		if (daedalus_coded_fmts[i].fourcc == fourcc)
			return &daedalus_coded_fmts[i];
	return NULL;
}

const struct daedalus_decoded_fmt *daedalus_decoded_fmt_by_index(unsigned int index)
{
	if (index >= ARRAY_SIZE(daedalus_decoded_fmts))
		return NULL;
	return &daedalus_decoded_fmts[index];
}

const struct daedalus_decoded_fmt *daedalus_find_decoded_fmt(u32 fourcc)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].fourcc == fourcc)
			return &daedalus_decoded_fmts[i];
	return NULL;
}

/* The CAPTURE format that carries the daemon's @pixfmt frames, or NULL. */
const struct daedalus_decoded_fmt *daedalus_decoded_fmt_by_pixfmt(u32 pixfmt)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_decoded_fmts); i++)
		if (daedalus_decoded_fmts[i].pixfmt == pixfmt)
			return &daedalus_decoded_fmts[i];
	return NULL;
}

static void daedalus_clamp_size(struct v4l2_pix_format_mplane *pix)
{
	pix->width = clamp_t(u32, ALIGN(pix->width, DAEDALUS_SIZE_STEP),
			     DAEDALUS_MIN_WIDTH, DAEDALUS_MAX_WIDTH);
	pix->height = clamp_t(u32, ALIGN(pix->height, DAEDALUS_SIZE_STEP),
			      DAEDALUS_MIN_HEIGHT, DAEDALUS_MAX_HEIGHT);
	pix->field = V4L2_FIELD_NONE;
	pix->num_planes = 1;
	memset(pix->reserved, 0, sizeof(pix->reserved));
	memset(pix->plane_fmt[0].reserved, 0,
	       sizeof(pix->plane_fmt[0].reserved));
}

/*
 * daedalus_fill_coded_fmt() - make @pix a valid OUTPUT format
 *
 * An unknown fourcc becomes the first coded format (VIDIOC_TRY_FMT never
 * fails on a format it does not know). Coded data has no line stride.
 */
void daedalus_fill_coded_fmt(struct v4l2_pix_format_mplane *pix)
{
	const struct daedalus_coded_fmt *fmt;
	u32 limit;

	fmt = daedalus_find_coded_fmt(pix->pixelformat);
	if (!fmt)
		fmt = daedalus_coded_fmt_by_index(0);
	pix->pixelformat = fmt->fourcc;
	daedalus_clamp_size(pix);
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
 * One plane: the luma plane followed by interleaved chroma at half height.
 * Rows are padded to a multiple of 4 bytes only: the layout GStreamer
 * assumes for a frame without a video meta (its default NV12 stride). With
 * a wider stride, GStreamer 1.22 copies each frame for a sink that takes no
 * video meta (filesink, appsink) into a buffer as large as the padded one,
 * and such a sink writes frames as wide as the stride.
 */
void daedalus_fill_decoded_fmt(struct v4l2_pix_format_mplane *pix)
{
	const struct daedalus_decoded_fmt *fmt;
	u32 stride;

	fmt = daedalus_find_decoded_fmt(pix->pixelformat);
	if (!fmt)
		fmt = daedalus_decoded_fmt_by_index(0);
	pix->pixelformat = fmt->fourcc;
	daedalus_clamp_size(pix);
	stride = ALIGN(pix->width * fmt->bpp_num, 4);
	pix->plane_fmt[0].bytesperline = stride;
	pix->plane_fmt[0].sizeimage = stride * pix->height * 3 / 2;
}

/* Default formats of a new file handle: VP9 320x240 in, NV12 out. */
void daedalus_default_fmts(struct daedalus_ctx *ctx)
{
	struct v4l2_pix_format_mplane *out = &ctx->out_fmt;
	struct v4l2_pix_format_mplane *cap = &ctx->cap_fmt;

	memset(out, 0, sizeof(*out));
	out->pixelformat = daedalus_coded_fmt_by_index(0)->fourcc;
	out->width = 320;
	out->height = 240;
	out->colorspace = V4L2_COLORSPACE_REC709;
	daedalus_fill_coded_fmt(out);

	memset(cap, 0, sizeof(*cap));
	cap->pixelformat = V4L2_PIX_FMT_NV12;
	cap->width = out->width;
	cap->height = out->height;
	cap->colorspace = out->colorspace;
	daedalus_fill_decoded_fmt(cap);
}
