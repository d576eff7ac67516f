// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.1 layer, the /dev/videoN node.
 *
 * The skeleton: a memory-to-memory video node that answers QUERYCAP, format
 * enumeration and negotiation, and accepts REQBUFS without allocating
 * anything (no queues exist yet). The handlers are this file's own; a later
 * layer that changes them wraps the table registered in dev->ioctl_ops.
 *
 * Reading order: daedalus_skeleton_layer at the bottom, then the ioctl table
 * daedalus_skel_ioctl_ops, then the handlers.
 */
#include <linux/slab.h>
#include <media/v4l2-dev.h>

#include "daedalus.h"

static int daedalus_querycap(struct file *file, void *priv,
			     struct v4l2_capability *cap)
{
	strscpy(cap->driver, DAEDALUS_DRIVER_NAME, sizeof(cap->driver));
	strscpy(cap->card, DAEDALUS_NAME, sizeof(cap->card));
	snprintf(cap->bus_info, sizeof(cap->bus_info), "platform:%s",
		 DAEDALUS_NAME);
	return 0;
}

/*
 * The description is the table's name, the same string the V4L2 core gives
 * the formats it knows ("VP9", "H.264"). A fourcc the core does not know
 * ('AV01', see compat.h) must come with one: without it the core warns
 * (WARN, "Unknown pixelformat") at every enumeration.
 */
static int daedalus_enum_fmt_out(struct file *file, void *priv,
				 struct v4l2_fmtdesc *f)
{
	const struct daedalus_coded_fmt *fmt;

	fmt = daedalus_coded_fmt_by_index(daedalus_file_to_ctx(file)->dev,
					  f->index);
	if (!fmt)
		return -EINVAL;
	f->pixelformat = fmt->fourcc;
	f->flags = V4L2_FMT_FLAG_COMPRESSED;
	strscpy(f->description, fmt->name, sizeof(f->description));
	return 0;
}

static int daedalus_enum_fmt_cap(struct file *file, void *priv,
				 struct v4l2_fmtdesc *f)
{
	const struct daedalus_decoded_fmt *fmt;

	fmt = daedalus_decoded_fmt_by_index(daedalus_file_to_ctx(file), f->index);
	if (!fmt)
		return -EINVAL;
	f->pixelformat = fmt->fourcc;
	return 0;
}

/* A coded format's sizes are its table entry's (daedalus_frmsize()). */
static int daedalus_enum_framesizes(struct file *file, void *priv,
				    struct v4l2_frmsizeenum *fsize)
{
	const struct v4l2_frmsize_stepwise *size;

	if (fsize->index)
		return -EINVAL;
	size = daedalus_frmsize(daedalus_file_to_ctx(file)->dev,
				fsize->pixel_format);
	if (!size)
		return -EINVAL;

	fsize->type = V4L2_FRMSIZE_TYPE_STEPWISE;
	fsize->stepwise = *size;
	return 0;
}

static int daedalus_g_fmt_out(struct file *file, void *priv,
			      struct v4l2_format *f)
{
	f->fmt.pix_mp = daedalus_file_to_ctx(file)->out_fmt;
	return 0;
}

static int daedalus_g_fmt_cap(struct file *file, void *priv,
			      struct v4l2_format *f)
{
	f->fmt.pix_mp = daedalus_file_to_ctx(file)->cap_fmt;
	return 0;
}

static int daedalus_try_fmt_out(struct file *file, void *priv,
				struct v4l2_format *f)
{
	daedalus_fill_coded_fmt(daedalus_file_to_ctx(file)->dev, &f->fmt.pix_mp);
	return 0;
}

/*
 * On a stateful decoder the CAPTURE geometry follows the stream: the size
 * and colorimetry set on OUTPUT are the decoder's (the client may only
 * choose among the decoded pixel formats).
 */
static int daedalus_try_fmt_cap(struct file *file, void *priv,
				struct v4l2_format *f)
{
	struct daedalus_ctx *ctx = daedalus_file_to_ctx(file);
	struct v4l2_pix_format_mplane *pix = &f->fmt.pix_mp;

	pix->width = ctx->cap_fmt.width;
	pix->height = ctx->cap_fmt.height;
	pix->colorspace = ctx->cap_fmt.colorspace;
	pix->xfer_func = ctx->cap_fmt.xfer_func;
	pix->ycbcr_enc = ctx->cap_fmt.ycbcr_enc;
	pix->quantization = ctx->cap_fmt.quantization;
	daedalus_fill_decoded_fmt(ctx, pix);
	return 0;
}

static int daedalus_s_fmt_out(struct file *file, void *priv,
			      struct v4l2_format *f)
{
	struct daedalus_ctx *ctx = daedalus_file_to_ctx(file);
	struct v4l2_pix_format_mplane *cap = &ctx->cap_fmt;

	daedalus_fill_coded_fmt(ctx->dev, &f->fmt.pix_mp);
	ctx->out_fmt = f->fmt.pix_mp;

	/* dev-decoder.rst: S_FMT(OUTPUT) propagates size and colorimetry. */
	cap->width = ctx->out_fmt.width;
	cap->height = ctx->out_fmt.height;
	cap->colorspace = ctx->out_fmt.colorspace;
	cap->xfer_func = ctx->out_fmt.xfer_func;
	cap->ycbcr_enc = ctx->out_fmt.ycbcr_enc;
	cap->quantization = ctx->out_fmt.quantization;
	daedalus_fill_decoded_fmt(ctx, cap);
	return 0;
}

static int daedalus_s_fmt_cap(struct file *file, void *priv,
			      struct v4l2_format *f)
{
	struct daedalus_ctx *ctx = daedalus_file_to_ctx(file);

	daedalus_try_fmt_cap(file, priv, f);
	ctx->cap_fmt = f->fmt.pix_mp;
	return 0;
}

/*
 * Phase 8.1 has no buffer queues: REQBUFS validates its arguments and
 * reports that no buffers exist.
 */
static int daedalus_skel_reqbufs(struct file *file, void *priv,
				 struct v4l2_requestbuffers *rb)
{
	if (rb->type != V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE &&
	    rb->type != V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)
		return -EINVAL;
	if (rb->memory != V4L2_MEMORY_MMAP && rb->memory != V4L2_MEMORY_DMABUF)
		return -EINVAL;
	rb->count = 0;
	rb->capabilities = 0;
	rb->flags = 0;
	memset(rb->reserved, 0, sizeof(rb->reserved));
	return 0;
}

static const struct v4l2_ioctl_ops daedalus_skel_ioctl_ops = {
	.vidioc_querycap		= daedalus_querycap,
	.vidioc_enum_framesizes		= daedalus_enum_framesizes,

	.vidioc_enum_fmt_vid_out	= daedalus_enum_fmt_out,
	.vidioc_g_fmt_vid_out_mplane	= daedalus_g_fmt_out,
	.vidioc_try_fmt_vid_out_mplane	= daedalus_try_fmt_out,
	.vidioc_s_fmt_vid_out_mplane	= daedalus_s_fmt_out,

	.vidioc_enum_fmt_vid_cap	= daedalus_enum_fmt_cap,
	.vidioc_g_fmt_vid_cap_mplane	= daedalus_g_fmt_cap,
	.vidioc_try_fmt_vid_cap_mplane	= daedalus_try_fmt_cap,
	.vidioc_s_fmt_vid_cap_mplane	= daedalus_s_fmt_cap,

	.vidioc_reqbufs			= daedalus_skel_reqbufs,
};

static int daedalus_skel_open(struct file *file)
{
	struct daedalus_dev *dev = video_drvdata(file);
	struct daedalus_ctx *ctx;

	/*
	 * No device lock needed: the context is private to this file until
	 * daedalus_fh_add() links it, and v4l2_fh keeps its own list lock.
	 */
	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	ctx->dev = dev;
	v4l2_fh_init(&ctx->fh, video_devdata(file));
	file->private_data = &ctx->fh;
	daedalus_default_fmts(ctx);
	daedalus_fh_add(&ctx->fh, file);
	return 0;
}

static int daedalus_skel_release(struct file *file)
{
	struct daedalus_ctx *ctx = daedalus_file_to_ctx(file);

	daedalus_fh_del(&ctx->fh, file);
	v4l2_fh_exit(&ctx->fh);
	kfree(ctx);
	return 0;
}

static const struct v4l2_file_operations daedalus_skel_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_skel_open,
	.release	= daedalus_skel_release,
	.unlocked_ioctl	= video_ioctl2,
};

static void daedalus_vfd_release(struct video_device *vfd)
{
	/* vfd is embedded in daedalus_dev, which v4l2_dev's release frees. */
}

static int daedalus_skel_init(struct daedalus_dev *dev)
{
	dev->fops = &daedalus_skel_fops;
	dev->ioctl_ops = &daedalus_skel_ioctl_ops;
	return 0;
}

static int daedalus_skel_publish(struct daedalus_dev *dev)
{
	struct video_device *vfd = &dev->vfd;
	int ret;

	strscpy(vfd->name, DAEDALUS_NAME, sizeof(vfd->name));
	vfd->fops = dev->fops;
	vfd->ioctl_ops = dev->ioctl_ops;
	vfd->release = daedalus_vfd_release;
	vfd->lock = &dev->vdev_lock;
	vfd->v4l2_dev = &dev->v4l2_dev;
	vfd->vfl_dir = VFL_DIR_M2M;
	vfd->device_caps = V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING;
	video_set_drvdata(vfd, dev);

	ret = video_register_device(vfd, VFL_TYPE_VIDEO, -1);
	if (ret) {
		v4l2_err(&dev->v4l2_dev, "failed to register video device: %d\n",
			 ret);
		return ret;
	}
	v4l2_info(&dev->v4l2_dev, "registered %s\n",
		  video_device_node_name(vfd));
	return 0;
}

static void daedalus_skel_unpublish(struct daedalus_dev *dev)
{
	video_unregister_device(&dev->vfd);
}

const struct daedalus_layer daedalus_skeleton_layer = {
	.name		= "8.1-skeleton",
	.init		= daedalus_skel_init,
	.publish	= daedalus_skel_publish,
	.unpublish	= daedalus_skel_unpublish,
};
