// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.5 ioctls of the stateful decoder.
 *
 * This layer extends the ioctl table phase 8.1 registered: its init copies
 * that table and daedalus_m2m_ioctl_ops_init() replaces what the decoder
 * changes. Format negotiation stays phase 8.1's (daedalus-video.c): the
 * handlers here wrap it (reached through daedalus_base_ops()), guarding it
 * against changes while buffers exist; queue ioctls are v4l2-mem2mem's. What
 * is ours: the coded formats' bytestream flags, the visible rectangle
 * (G_SELECTION), DECODER_CMD and the events. Non-queue ioctls run with
 * dev->vdev_lock held, queue ioctls with the file's ctx->q_lock; handlers
 * that touch the CAPTURE format also take ctx->lock (the pump changes it).
 * None of these locks is ever held across a daemon round trip.
 */
#include <media/v4l2-event.h>
#include <media/v4l2-mem2mem.h>

#include "daedalus-m2m.h"

/* The ioctl table registered before this layer: the handlers wrapped here. */
static const struct v4l2_ioctl_ops *daedalus_base_ops(struct file *file)
{
	return daedalus_dev_m2m(daedalus_file_to_ctx(file)->dev)->base_ioctl_ops;
}

/* The decoder handles each codec's bytestream as its descriptor says. */
static int daedalus_m2m_enum_fmt_out(struct file *file, void *priv,
				     struct v4l2_fmtdesc *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	const struct daedalus_coded_fmt *fmt;
	int ret;

	ret = base->vidioc_enum_fmt_vid_out(file, priv, f);
	if (ret)
		return ret;
	fmt = daedalus_find_coded_fmt(daedalus_file_to_ctx(file)->dev,
				      f->pixelformat);
	if (fmt)
		f->flags |= fmt->fmt_flags;
	return 0;
}

static int daedalus_m2m_g_fmt_cap(struct file *file, void *priv,
				  struct v4l2_format *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	int ret;

	mutex_lock(&ctx->lock);
	ret = base->vidioc_g_fmt_vid_cap_mplane(file, priv, f);
	mutex_unlock(&ctx->lock);
	return ret;
}

static int daedalus_m2m_try_fmt_cap(struct file *file, void *priv,
				    struct v4l2_format *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	int ret;

	mutex_lock(&ctx->lock);
	ret = base->vidioc_try_fmt_vid_cap_mplane(file, priv, f);
	mutex_unlock(&ctx->lock);
	return ret;
}

/* The OUTPUT buffers' size: at most what the transport's FEED carries. */
static void daedalus_m2m_clamp_out(struct file *file, struct v4l2_format *f)
{
	const struct daedalus_m2m *m2m =
		daedalus_dev_m2m(daedalus_file_to_ctx(file)->dev);
	struct v4l2_plane_pix_format *plane = &f->fmt.pix_mp.plane_fmt[0];
	u32 max = m2m->transport.out_sizeimage_max;

	if (max)
		plane->sizeimage = min_t(u32, plane->sizeimage, max);
}

static int daedalus_m2m_try_fmt_out(struct file *file, void *priv,
				    struct v4l2_format *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	int ret;

	ret = base->vidioc_try_fmt_vid_out_mplane(file, priv, f);
	daedalus_m2m_clamp_out(file, f);
	return ret;
}

static int daedalus_m2m_s_fmt_out(struct file *file, void *priv,
				  struct v4l2_format *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	struct v4l2_m2m_ctx *m2m = ctx->base.fh.m2m_ctx;
	int ret = -EBUSY;

	mutex_lock(&ctx->q_lock);
	/* dev-decoder.rst: changing OUTPUT resets CAPTURE, which must be idle. */
	if (!vb2_is_busy(v4l2_m2m_get_src_vq(m2m)) &&
	    !vb2_is_busy(v4l2_m2m_get_dst_vq(m2m))) {
		mutex_lock(&ctx->lock);
		/* a new stream: CAPTURE offers every format until its header */
		WRITE_ONCE(ctx->base.stream_fourcc, 0);
		ret = base->vidioc_s_fmt_vid_out_mplane(file, priv, f);
		daedalus_m2m_clamp_out(file, f);
		ctx->base.out_fmt.plane_fmt[0].sizeimage =
			f->fmt.pix_mp.plane_fmt[0].sizeimage;
		/*
		 * CAPTURE now has the format derived from OUTPUT's, and the
		 * visible rectangle follows it until a header says otherwise:
		 * a compose rectangle left from the previous stream (GStreamer
		 * 1.22 sets OUTPUT again at an H.264 SPS change) would give a
		 * client the old picture size with the new format.
		 */
		if (!ret)
			ctx->have_geometry = false;
		/*
		 * Another codec on this file (both queues idle, so the pumps
		 * have nothing of the old stream): a new stream in the daemon,
		 * whose streams keep one codec each (FEED of another is
		 * EINVAL). The old one's decoder is dropped without waiting.
		 */
		if (!ret && ctx->stream.used &&
		    ctx->stream.codec != daedalus_m2m_out_codec(ctx)) {
			daedalus_stream_close(ctx->base.dev, &ctx->stream);
			daedalus_stream_init(&ctx->stream);
		}
		mutex_unlock(&ctx->lock);
	}
	mutex_unlock(&ctx->q_lock);
	return ret;
}

static int daedalus_m2m_s_fmt_cap(struct file *file, void *priv,
				  struct v4l2_format *f)
{
	const struct v4l2_ioctl_ops *base = daedalus_base_ops(file);
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	int ret = -EBUSY;

	mutex_lock(&ctx->q_lock);
	if (!vb2_is_busy(v4l2_m2m_get_dst_vq(ctx->base.fh.m2m_ctx))) {
		mutex_lock(&ctx->lock);
		ret = base->vidioc_s_fmt_vid_cap_mplane(file, priv, f);
		mutex_unlock(&ctx->lock);
	}
	mutex_unlock(&ctx->q_lock);
	return ret;
}

/* The visible picture within the decoded (CAPTURE) buffers. */
static int daedalus_m2m_g_selection(struct file *file, void *priv,
				    struct v4l2_selection *s)
{
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	const struct v4l2_pix_format_mplane *cap = &ctx->base.cap_fmt;
	bool visible;

	if (s->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
		return -EINVAL;
	switch (s->target) {
	case V4L2_SEL_TGT_COMPOSE:
	case V4L2_SEL_TGT_COMPOSE_DEFAULT:
		/* The picture the stream codes (before that, the format). */
		visible = true;
		break;
	case V4L2_SEL_TGT_COMPOSE_BOUNDS:
	case V4L2_SEL_TGT_COMPOSE_PADDED:
		visible = false;
		break;
	default:
		return -EINVAL;
	}
	s->r.left = 0;
	s->r.top = 0;
	mutex_lock(&ctx->lock);
	if (visible && ctx->have_geometry) {
		s->r.width = ctx->visible_width;
		s->r.height = ctx->visible_height;
	} else {
		s->r.width = cap->width;
		s->r.height = cap->height;
	}
	mutex_unlock(&ctx->lock);
	return 0;
}

/*
 * STREAMON, then a look for work (buffers queued before it now count). A
 * refused stream's queues answer -EIO until OUTPUT is stopped.
 */
static int daedalus_m2m_streamon(struct file *file, void *priv,
				 enum v4l2_buf_type type)
{
	int ret;

	if (daedalus_m2m_refused(daedalus_file_to_m2m(file)))
		return -EIO;
	ret = v4l2_m2m_ioctl_streamon(file, priv, type);
	if (!ret)
		daedalus_m2m_kick(daedalus_file_to_m2m(file));
	return ret;
}

static int daedalus_m2m_try_decoder_cmd(struct file *file, void *priv,
					struct v4l2_decoder_cmd *dc)
{
	return v4l2_m2m_ioctl_try_decoder_cmd(file, priv, dc);
}

/*
 * STOP drains: every queued OUTPUT buffer is decoded, the daemon is flushed,
 * and the last CAPTURE buffer carries V4L2_BUF_FLAG_LAST, followed by
 * V4L2_EVENT_EOS. START after a completed drain resumes decoding.
 */
static int daedalus_m2m_decoder_cmd(struct file *file, void *priv,
				    struct v4l2_decoder_cmd *dc)
{
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	struct v4l2_m2m_ctx *m2m = ctx->base.fh.m2m_ctx;
	struct vb2_queue *dst_vq = v4l2_m2m_get_dst_vq(m2m);
	int ret;

	ret = v4l2_m2m_ioctl_try_decoder_cmd(file, priv, dc);
	if (ret)
		return ret;

	mutex_lock(&ctx->lock);
	if (ctx->fatal) {
		mutex_unlock(&ctx->lock);
		return -EIO;
	}
	switch (dc->cmd) {
	case V4L2_DEC_CMD_STOP:
		if (!vb2_is_streaming(v4l2_m2m_get_src_vq(m2m)) ||
		    ctx->draining || ctx->stopped)
			break; /* nothing to drain (or already draining) */
		ctx->draining = true;
		ctx->flushed = false;
		ctx->flush_retries = 0;
		break;
	case V4L2_DEC_CMD_START:
		if (ctx->draining) {
			ret = -EBUSY;
			break;
		}
		ctx->stopped = false;
		ctx->flushed = false;
		ctx->last_owed = false;
		vb2_clear_last_buffer_dequeued(dst_vq);
		break;
	}
	mutex_unlock(&ctx->lock);
	daedalus_m2m_kick(ctx);
	return ret;
}

static int daedalus_m2m_subscribe_event(struct v4l2_fh *fh,
					const struct v4l2_event_subscription *sub)
{
	switch (sub->type) {
	case V4L2_EVENT_EOS:
		return v4l2_event_subscribe(fh, sub, 2, NULL);
	case V4L2_EVENT_SOURCE_CHANGE:
		return v4l2_src_change_event_subscribe(fh, sub);
	default:
		return v4l2_ctrl_subscribe_event(fh, sub);
	}
}

/**
 * daedalus_m2m_ioctl_ops_init() - this layer's ioctl table
 * @ops: a copy of @base, which it extends.
 * @base: the table registered before this layer (phase 8.1's).
 *
 * QUERYCAP, ENUM_FRAMESIZES, ENUM_FMT on CAPTURE and G_FMT on OUTPUT stay
 * phase 8.1's. Called from the layer's init, in process context.
 *
 * Return: 0, or -EINVAL when @base lacks a handler this layer wraps.
 */
int daedalus_m2m_ioctl_ops_init(struct v4l2_ioctl_ops *ops, const struct v4l2_ioctl_ops *base)
{
	if (!base->vidioc_enum_fmt_vid_out ||
	    !base->vidioc_try_fmt_vid_out_mplane ||
	    !base->vidioc_s_fmt_vid_out_mplane ||
	    !base->vidioc_g_fmt_vid_cap_mplane ||
	    !base->vidioc_try_fmt_vid_cap_mplane ||
	    !base->vidioc_s_fmt_vid_cap_mplane)
		return -EINVAL;

	/* Wrapped: phase 8.1's handler with flags, clamps or locking. */
	ops->vidioc_enum_fmt_vid_out = daedalus_m2m_enum_fmt_out;
	ops->vidioc_try_fmt_vid_out_mplane = daedalus_m2m_try_fmt_out;
	ops->vidioc_s_fmt_vid_out_mplane = daedalus_m2m_s_fmt_out;
	ops->vidioc_g_fmt_vid_cap_mplane = daedalus_m2m_g_fmt_cap;
	ops->vidioc_try_fmt_vid_cap_mplane = daedalus_m2m_try_fmt_cap;
	ops->vidioc_s_fmt_vid_cap_mplane = daedalus_m2m_s_fmt_cap;

	ops->vidioc_g_selection = daedalus_m2m_g_selection;

	/* The vb2 queues, which replace phase 8.1's empty REQBUFS. */
	ops->vidioc_reqbufs = v4l2_m2m_ioctl_reqbufs;
	ops->vidioc_querybuf = v4l2_m2m_ioctl_querybuf;
	ops->vidioc_qbuf = v4l2_m2m_ioctl_qbuf;
	ops->vidioc_dqbuf = v4l2_m2m_ioctl_dqbuf;
	ops->vidioc_prepare_buf = v4l2_m2m_ioctl_prepare_buf;
	ops->vidioc_create_bufs = v4l2_m2m_ioctl_create_bufs;
	ops->vidioc_expbuf = v4l2_m2m_ioctl_expbuf;
	ops->vidioc_streamon = daedalus_m2m_streamon;
	ops->vidioc_streamoff = v4l2_m2m_ioctl_streamoff;

	ops->vidioc_try_decoder_cmd = daedalus_m2m_try_decoder_cmd;
	ops->vidioc_decoder_cmd = daedalus_m2m_decoder_cmd;

	ops->vidioc_subscribe_event = daedalus_m2m_subscribe_event;
	ops->vidioc_unsubscribe_event = v4l2_event_unsubscribe;
	return 0;
}
