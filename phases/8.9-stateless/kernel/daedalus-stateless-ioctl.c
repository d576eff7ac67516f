// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.9 ioctls and formats of the stateless node.
 *
 * Reading order: the codec table daedalus_sl_codecs[], then the format
 * handlers, then the ioctl table at the bottom. The node follows
 * dev-stateless-decoder.rst: the client sets the OUTPUT format (the coded
 * format and the coded size, from the stream's headers), and CAPTURE
 * follows it in size, and in pixel format the codec's SPS / frame control
 * (NV12 for 8-bit 4:2:0, P010 for 10-bit). Queue ioctls are v4l2-mem2mem's; DECODER_CMD is
 * its stateless helpers' (V4L2_DEC_CMD_FLUSH releases a held CAPTURE
 * buffer).
 *
 * Locking: non-queue ioctls run with the node's vdev_lock (daedalus_sl),
 * queue ioctls with the file's q_lock. S_FMT also takes q_lock, so that no
 * REQBUFS allocates buffers for the format it is changing. Lock order:
 * vdev_lock, then q_lock, then the file's lock.
 */
#include <media/v4l2-event.h>
#include <media/v4l2-mem2mem.h>

#include "daedalus-stateless.h"

/* VP9: 4:2:0 (both subsampling flags) at 8 or 10 bits. */
static u32 daedalus_sl_vp9_fourcc(const void *value)
{
	const struct v4l2_ctrl_vp9_frame *frame = value;
	const u32 sub = V4L2_VP9_FRAME_FLAG_X_SUBSAMPLING |
			V4L2_VP9_FRAME_FLAG_Y_SUBSAMPLING;

	if ((frame->flags & sub) != sub)
		return 0;
	if (frame->bit_depth == 8)
		return V4L2_PIX_FMT_NV12;
	return frame->bit_depth == 10 ? V4L2_PIX_FMT_P010 : 0;
}

/* H.264: 4:2:0 (chroma_format_idc 1), luma and chroma at 8 or 10 bits. */
static u32 daedalus_sl_h264_fourcc(const void *value)
{
	const struct v4l2_ctrl_h264_sps *sps = value;

	if (sps->chroma_format_idc != 1 ||
	    sps->bit_depth_luma_minus8 != sps->bit_depth_chroma_minus8)
		return 0;
	if (!sps->bit_depth_luma_minus8)
		return V4L2_PIX_FMT_NV12;
	return sps->bit_depth_luma_minus8 == 2 ? V4L2_PIX_FMT_P010 : 0;
}

/* AV1: 4:2:0 colour (not monochrome), 8 or 10 bits. */
DAEDALUS_IF_AV1_UAPI(static u32 daedalus_sl_av1_fourcc(const void *value)
{
	const struct v4l2_ctrl_av1_sequence *seq = value;
	const u32 sub = V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_X |
			V4L2_AV1_SEQUENCE_FLAG_SUBSAMPLING_Y;

	if ((seq->flags & sub) != sub ||
	    (seq->flags & V4L2_AV1_SEQUENCE_FLAG_MONO_CHROME))
		return 0;
	if (seq->bit_depth == 8)
		return V4L2_PIX_FMT_NV12;
	return seq->bit_depth == 10 ? V4L2_PIX_FMT_P010 : 0;
})

/*
 * The stateless codecs: the OUTPUT format of each, and the controls a
 * request must carry (dev-stateless-decoder.rst and
 * ext-ctrls-codec-stateless.rst: VP9 needs its frame parameters for every
 * frame; H.264, frame-based, its PPS and decode parameters; the
 * scaling matrix only when the PPS says it has one, the compressed header
 * only when the client sends it). The rest is phase 8.1's row of the codec.
 */
static const struct daedalus_sl_codec daedalus_sl_codecs[] = {
	{
		.fourcc		= V4L2_PIX_FMT_VP9_FRAME,
		.codec		= DAEDALUS_CODEC_VP9,
		.required	= { V4L2_CID_STATELESS_VP9_FRAME },
		.fmt_ctrl	= V4L2_CID_STATELESS_VP9_FRAME,
		.decoded_fourcc	= daedalus_sl_vp9_fourcc,
	},
	{
		.fourcc		= V4L2_PIX_FMT_H264_SLICE,
		.codec		= DAEDALUS_CODEC_H264,
		/*
		 * The SPS only when it changes: GStreamer's v4l2slh264dec
		 * sets it with the first picture of a sequence, and the file
		 * keeps its value for the requests after.
		 */
		.required	= {
			V4L2_CID_STATELESS_H264_PPS,
			V4L2_CID_STATELESS_H264_DECODE_PARAMS,
		},
		/*
		 * No HOLD_CAPTURE_BUF: phase 8.1's DECODE_MODE offers
		 * FRAME_BASED only, so a request carries every slice of its
		 * picture. The daemon decodes whole access units, and the
		 * uAPI never marks a picture's last slice (a held CAPTURE
		 * buffer is released by the next timestamp).
		 */
		.hold		= false,
		.fmt_ctrl	= V4L2_CID_STATELESS_H264_SPS,
		.decoded_fourcc	= daedalus_sl_h264_fourcc,
	},
	/*
	 * AV1 where the kernel has its uAPI (6.5+). The frame header and the
	 * tile list come with every frame; the sequence header only when it
	 * changes (GStreamer sets it once), so the file keeps its value.
	 */
	DAEDALUS_IF_AV1_UAPI({
		.fourcc		= V4L2_PIX_FMT_AV1_FRAME,
		.codec		= DAEDALUS_CODEC_AV1,
		.required	= {
			V4L2_CID_STATELESS_AV1_FRAME,
			V4L2_CID_STATELESS_AV1_TILE_GROUP_ENTRY,
		},
		.fmt_ctrl	= V4L2_CID_STATELESS_AV1_SEQUENCE,
		.decoded_fourcc	= daedalus_sl_av1_fourcc,
	})
};

const struct daedalus_sl_codec *daedalus_sl_codec_by_index(unsigned int index)
{
	return index < ARRAY_SIZE(daedalus_sl_codecs) ?
	       &daedalus_sl_codecs[index] : NULL;
}

const struct daedalus_sl_codec *daedalus_sl_find_codec(u32 fourcc)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(daedalus_sl_codecs); i++)
		if (daedalus_sl_codecs[i].fourcc == fourcc)
			return &daedalus_sl_codecs[i];
	return NULL;
}

/**
 * daedalus_sl_fill_out_fmt() - make @pix a valid OUTPUT format of the node
 * @dev: the device.
 * @pix: the format; a fourcc the node does not offer becomes the first.
 *
 * Phase 8.1's rules for a coded format (sizes, colorimetry, buffer size)
 * are its codec row's: @pix is filled by daedalus_fill_coded_fmt() as the
 * stateful format of the same codec, then given the stateless fourcc back.
 */
void daedalus_sl_fill_out_fmt(struct daedalus_dev *dev,
			      struct v4l2_pix_format_mplane *pix)
{
	const struct daedalus_sl_codec *codec;

	codec = daedalus_sl_find_codec(pix->pixelformat);
	if (!codec)
		codec = &daedalus_sl_codecs[0];
	pix->pixelformat = daedalus_coded_fmt_by_codec(codec->codec)->fourcc;
	daedalus_fill_coded_fmt(dev, pix);
	pix->pixelformat = codec->fourcc;
}

/*
 * CAPTURE follows OUTPUT: its size and colorimetry are OUTPUT's, its pixel
 * format one the file offers (NV12).
 */
static void daedalus_sl_follow_out(struct daedalus_sl_ctx *ctx,
				   struct v4l2_pix_format_mplane *cap)
{
	const struct v4l2_pix_format_mplane *out = &ctx->base.out_fmt;

	cap->width = out->width;
	cap->height = out->height;
	cap->colorspace = out->colorspace;
	cap->xfer_func = out->xfer_func;
	cap->ycbcr_enc = out->ycbcr_enc;
	cap->quantization = out->quantization;
	daedalus_fill_decoded_fmt(&ctx->base, cap);
}

/**
 * daedalus_sl_set_codec() - the file's codec is its OUTPUT format's
 * @ctx: the file, with both queues idle (open, S_FMT(OUTPUT)).
 *
 * A codec whose row has @hold offers V4L2_BUF_CAP_SUPPORTS_M2M_HOLD_CAPTURE_BUF
 * on OUTPUT (slices or fields of one picture in several requests); none
 * does now (H.264 is frame-based, see its row). Another
 * codec is a new stream in the daemon, whose streams keep one codec each.
 */
void daedalus_sl_set_codec(struct daedalus_sl_ctx *ctx)
{
	struct vb2_queue *src_vq = v4l2_m2m_get_src_vq(ctx->base.fh.m2m_ctx);

	ctx->codec = daedalus_sl_find_codec(ctx->base.out_fmt.pixelformat);
	if (ctx->codec->hold)
		src_vq->subsystem_flags |= VB2_V4L2_FL_SUPPORTS_M2M_HOLD_CAPTURE_BUF;
	else
		src_vq->subsystem_flags &= ~VB2_V4L2_FL_SUPPORTS_M2M_HOLD_CAPTURE_BUF;
	if (ctx->stream.used && ctx->stream.codec != ctx->codec->codec) {
		daedalus_stream_close(ctx->base.dev, &ctx->stream);
		daedalus_stream_init(&ctx->stream);
	}
}

/*
 * CAPTURE follows the codec's format control too: the client sets the SPS
 * or the frame header before it sets CAPTURE up (dev-stateless-decoder.rst),
 * and CAPTURE then offers the one pixel format that value needs
 * (base.stream_fourcc, see struct daedalus_ctx). Only while CAPTURE has no
 * buffers: a request's value for a stream already set up changes nothing
 * here (the daemon refuses a picture that is not CAPTURE's format).
 * Called with ctx->q_lock held.
 */
static void daedalus_sl_follow_ctrls(struct daedalus_sl_ctx *ctx)
{
	struct v4l2_ctrl *ctrl;
	u32 fourcc = 0;

	if (vb2_is_busy(v4l2_m2m_get_dst_vq(ctx->base.fh.m2m_ctx)))
		return;
	ctrl = v4l2_ctrl_find(&ctx->hdl, ctx->codec->fmt_ctrl);
	if (ctrl) {
		v4l2_ctrl_lock(ctrl);
		fourcc = ctx->codec->decoded_fourcc(ctrl->p_cur.p);
		v4l2_ctrl_unlock(ctrl);
	}
	if (!fourcc || fourcc == ctx->base.stream_fourcc)
		return;
	WRITE_ONCE(ctx->base.stream_fourcc, fourcc);
	ctx->base.cap_fmt.pixelformat = fourcc;
	daedalus_sl_follow_out(ctx, &ctx->base.cap_fmt);
}

/*
 * A new file: VP9 frames of 320x240 in, NV12 out (the default frame
 * control is 8-bit 4:2:0).
 */
void daedalus_sl_default_fmts(struct daedalus_sl_ctx *ctx)
{
	ctx->base.stream_fourcc = V4L2_PIX_FMT_NV12;
	daedalus_default_fmts(&ctx->base);
	ctx->base.out_fmt.pixelformat = daedalus_sl_codecs[0].fourcc;
	daedalus_sl_fill_out_fmt(ctx->base.dev, &ctx->base.out_fmt);
	daedalus_sl_follow_out(ctx, &ctx->base.cap_fmt);
}

static int daedalus_sl_querycap(struct file *file, void *priv,
				struct v4l2_capability *cap)
{
	strscpy(cap->driver, DAEDALUS_DRIVER_NAME, sizeof(cap->driver));
	strscpy(cap->card, DAEDALUS_NAME "-stateless", sizeof(cap->card));
	snprintf(cap->bus_info, sizeof(cap->bus_info), "platform:%s",
		 DAEDALUS_NAME);
	return 0;
}

/* The V4L2 core names both formats ("VP9 Frame", "H.264 Parsed Slice Data"). */
static int daedalus_sl_enum_fmt_out(struct file *file, void *priv,
				    struct v4l2_fmtdesc *f)
{
	const struct daedalus_sl_codec *codec;

	codec = daedalus_sl_codec_by_index(f->index);
	if (!codec)
		return -EINVAL;
	f->pixelformat = codec->fourcc;
	f->flags = V4L2_FMT_FLAG_COMPRESSED;
	return 0;
}

static int daedalus_sl_enum_fmt_cap(struct file *file, void *priv,
				    struct v4l2_fmtdesc *f)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);
	const struct daedalus_decoded_fmt *fmt;

	mutex_lock(&ctx->q_lock);
	daedalus_sl_follow_ctrls(ctx);
	fmt = daedalus_decoded_fmt_by_index(&ctx->base, f->index);
	mutex_unlock(&ctx->q_lock);
	if (!fmt)
		return -EINVAL;
	f->pixelformat = fmt->fourcc;
	return 0;
}

/*
 * A coded format's sizes are its codec row's. A decoded format has none of
 * its own: CAPTURE is the coded size (no scaler), as rkvdec and hantro
 * without post-processor answer. GStreamer's v4l2codecs read a decoded
 * format's sizes as the scaled sizes a post-processor offers.
 */
static int daedalus_sl_enum_framesizes(struct file *file, void *priv,
				       struct v4l2_frmsizeenum *fsize)
{
	const struct v4l2_frmsize_stepwise *size;
	const struct daedalus_sl_codec *codec;

	if (fsize->index)
		return -EINVAL;
	codec = daedalus_sl_find_codec(fsize->pixel_format);
	if (!codec)
		return -EINVAL;
	size = &daedalus_coded_fmt_by_codec(codec->codec)->frmsize;
	fsize->type = V4L2_FRMSIZE_TYPE_STEPWISE;
	fsize->stepwise = *size;
	return 0;
}

static int daedalus_sl_g_fmt_out(struct file *file, void *priv,
				 struct v4l2_format *f)
{
	f->fmt.pix_mp = daedalus_file_to_ctx(file)->out_fmt;
	return 0;
}

static int daedalus_sl_g_fmt_cap(struct file *file, void *priv,
				 struct v4l2_format *f)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);

	mutex_lock(&ctx->q_lock);
	daedalus_sl_follow_ctrls(ctx);
	f->fmt.pix_mp = ctx->base.cap_fmt;
	mutex_unlock(&ctx->q_lock);
	return 0;
}

static int daedalus_sl_try_fmt_out(struct file *file, void *priv,
				   struct v4l2_format *f)
{
	daedalus_sl_fill_out_fmt(daedalus_file_to_ctx(file)->dev,
				 &f->fmt.pix_mp);
	return 0;
}

static int daedalus_sl_try_fmt_cap(struct file *file, void *priv,
				   struct v4l2_format *f)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);

	mutex_lock(&ctx->q_lock);
	daedalus_sl_follow_ctrls(ctx);
	daedalus_sl_follow_out(ctx, &f->fmt.pix_mp);
	mutex_unlock(&ctx->q_lock);
	return 0;
}

/*
 * A new coded format or size: CAPTURE follows (dev-stateless-decoder.rst),
 * so both queues must be idle.
 */
static int daedalus_sl_s_fmt_out(struct file *file, void *priv,
				 struct v4l2_format *f)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);
	struct v4l2_m2m_ctx *m2m = ctx->base.fh.m2m_ctx;
	int ret = -EBUSY;

	mutex_lock(&ctx->q_lock);
	if (!vb2_is_busy(v4l2_m2m_get_src_vq(m2m)) &&
	    !vb2_is_busy(v4l2_m2m_get_dst_vq(m2m))) {
		daedalus_sl_fill_out_fmt(ctx->base.dev, &f->fmt.pix_mp);
		ctx->base.out_fmt = f->fmt.pix_mp;
		daedalus_sl_follow_out(ctx, &ctx->base.cap_fmt);
		daedalus_sl_set_codec(ctx);
		daedalus_sl_follow_ctrls(ctx);
		ret = 0;
	}
	mutex_unlock(&ctx->q_lock);
	return ret;
}

static int daedalus_sl_s_fmt_cap(struct file *file, void *priv,
				 struct v4l2_format *f)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);
	int ret = -EBUSY;

	mutex_lock(&ctx->q_lock);
	if (!vb2_is_busy(v4l2_m2m_get_dst_vq(ctx->base.fh.m2m_ctx))) {
		daedalus_sl_follow_ctrls(ctx);
		daedalus_sl_follow_out(ctx, &f->fmt.pix_mp);
		ctx->base.cap_fmt = f->fmt.pix_mp;
		ret = 0;
	}
	mutex_unlock(&ctx->q_lock);
	return ret;
}

const struct v4l2_ioctl_ops daedalus_sl_ioctl_ops = {
	.vidioc_querycap		= daedalus_sl_querycap,
	.vidioc_enum_framesizes		= daedalus_sl_enum_framesizes,

	.vidioc_enum_fmt_vid_out	= daedalus_sl_enum_fmt_out,
	.vidioc_g_fmt_vid_out_mplane	= daedalus_sl_g_fmt_out,
	.vidioc_try_fmt_vid_out_mplane	= daedalus_sl_try_fmt_out,
	.vidioc_s_fmt_vid_out_mplane	= daedalus_sl_s_fmt_out,

	.vidioc_enum_fmt_vid_cap	= daedalus_sl_enum_fmt_cap,
	.vidioc_g_fmt_vid_cap_mplane	= daedalus_sl_g_fmt_cap,
	.vidioc_try_fmt_vid_cap_mplane	= daedalus_sl_try_fmt_cap,
	.vidioc_s_fmt_vid_cap_mplane	= daedalus_sl_s_fmt_cap,

	.vidioc_reqbufs			= v4l2_m2m_ioctl_reqbufs,
	.vidioc_querybuf		= v4l2_m2m_ioctl_querybuf,
	.vidioc_qbuf			= v4l2_m2m_ioctl_qbuf,
	.vidioc_dqbuf			= v4l2_m2m_ioctl_dqbuf,
	.vidioc_prepare_buf		= v4l2_m2m_ioctl_prepare_buf,
	.vidioc_create_bufs		= v4l2_m2m_ioctl_create_bufs,
	.vidioc_expbuf			= v4l2_m2m_ioctl_expbuf,
	.vidioc_streamon		= v4l2_m2m_ioctl_streamon,
	.vidioc_streamoff		= v4l2_m2m_ioctl_streamoff,

	.vidioc_try_decoder_cmd		= v4l2_m2m_ioctl_stateless_try_decoder_cmd,
	.vidioc_decoder_cmd		= v4l2_m2m_ioctl_stateless_decoder_cmd,

	.vidioc_subscribe_event		= v4l2_ctrl_subscribe_event,
	.vidioc_unsubscribe_event	= v4l2_event_unsubscribe,
};
