// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.9 layer, the stateless decoder node.
 *
 * A second video node, next to the stateful one of phases 8.1-8.8 and on the
 * same media device (phase 8.7's), that speaks the stateless decoder
 * interface (Documentation/userspace-api/media/v4l/dev-stateless-decoder.rst):
 * OUTPUT takes V4L2_PIX_FMT_VP9_FRAME (one frame per buffer) or
 * V4L2_PIX_FMT_H264_SLICE (frame-based, Annex B start codes), each buffer in
 * a media request that carries the codec's controls; CAPTURE gives NV12.
 *
 * Reading order: daedalus_sl_run() is one job: v4l2-mem2mem's scheduler
 * picks an OUTPUT buffer (its request) and a CAPTURE buffer, device_run
 * queues the job on the file's work item, and the work applies the request's
 * controls (v4l2_ctrl_request_setup()), copies their values into one
 * DECODE_REQUEST (daedalus_sl_build()), completes the request's controls,
 * and sends it to the daemon, which takes both buffers as dma-bufs while the
 * request is in flight (daedalus_sl_get(): 0 the OUTPUT buffer, read-only, 1
 * the CAPTURE buffer, read-write). Its answer finishes the job: both buffers
 * are done (v4l2_m2m_buf_done_and_job_finish()), in error unless the daemon
 * wrote the picture. No daemon, a daemon that does not answer within the
 * bridge's watchdog, or one that answers nonsense: both buffers in error.
 * Then daedalus_sl_req_validate(), which refuses a request that lacks the
 * codec's mandatory controls, the vb2 queue operations, open and release,
 * and the layer.
 *
 * The media device's request ops: phase 8.7 registers the media device with
 * none (its stateful node takes no requests). This layer's init, which runs
 * after 8.7's and before anything is published, sets them
 * (daedalus_sl_mdev_ops, through the V4L2 device's mdev), and its exit
 * clears them: no earlier file changes, and no #if. Once they are set the
 * V4L2 core also takes the media device's req_queue_mutex around STREAMON,
 * STREAMOFF and REQBUFS of the stateful node; none of those waits for the
 * daemon (its stop cancels its requests first).
 *
 * Locking: the file's q_lock is its vb2 queues' lock; its lock guards the
 * job's flags and counters and is never held across a daemon round trip.
 * The job runs in a work item without either. STREAMOFF and close wait for
 * a running job (v4l2-mem2mem's cancel) after job_abort cancelled the
 * file's bridge requests, so neither waits for the daemon. Formats change
 * only while both queues are idle (no job, no request with a buffer), so
 * the job and the request validation read them without a lock.
 */
#include <linux/dma-buf.h>
#include <linux/err.h>
#include <linux/slab.h>
#include <media/media-request.h>
#include <media/v4l2-event.h>
#include <media/videobuf2-v4l2.h>

#include "daedalus-bridge.h"
#include "daedalus-dmabuf.h"
#include "daedalus-m2m.h"
#include "daedalus-stateless.h"

/* The DECODE_REQUEST buffer of a file: the message, then its controls. */
#define DAEDALUS_SL_MSG_SIZE	(sizeof(struct daedalus_request_decode) + \
				 DAEDALUS_REQUEST_CTRLS_MAX)

static_assert(DAEDALUS_SL_MSG_SIZE <= DAEDALUS_MAX_PAYLOAD);

/**
 * struct daedalus_sl_reply - the answer to one DECODE_REQUEST
 * @reply: the bridge's description of it.
 * @resp: the fixed part of the answer.
 * @msg: the daemon's message after it.
 * @sizeimage: bytes a picture takes in the CAPTURE buffer.
 * @hold: the job holds the CAPTURE buffer (DAEDALUS_REQUEST_HOLD).
 * @cap_taken: the daemon took the CAPTURE buffer (DAEDALUS_IOC_GET_DMABUF,
 *	index 1). Written and read under the bridge lock only.
 *
 * Lives in the job's frame; @resp and @msg stay together, as received.
 */
struct daedalus_sl_reply {
	struct daedalus_reply reply;
	struct {
		struct daedalus_request_decode_resp resp;
		char msg[DAEDALUS_MAX_MSG];
	} answer;
	u32 sizeimage;
	bool hold;
	bool cap_taken;
};

/**
 * struct daedalus_sl_job - the buffers of one job, for the bridge
 * @attach: how the bridge reaches them (daedalus_sl_get()).
 * @vb: 0 the OUTPUT buffer, 1 the CAPTURE buffer; both stay on their
 *	queues' ready lists, the job's, until it finishes.
 * @sr: the answer, whose @cap_taken daedalus_sl_get() sets.
 */
struct daedalus_sl_job {
	struct daedalus_attach attach;
	struct vb2_buffer *vb[2];
	struct daedalus_sl_reply *sr;
};

/*
 * Buffer @index of the job as a new dma-buf reference; called by the bridge
 * under its lock while the request is in flight, when the job (blocked in
 * the bridge call) holds both buffers: 0 the OUTPUT buffer (read-only), 1
 * the CAPTURE buffer, exported as phase 8.6's daedalus_vb_dmabuf() does.
 */
static struct dma_buf *daedalus_sl_get(const struct daedalus_attach *attach,
				       u32 index, u32 *size)
{
	const struct daedalus_sl_job *job =
		container_of(attach, struct daedalus_sl_job, attach);
	struct dma_buf *dbuf;

	if (index >= ARRAY_SIZE(job->vb))
		return ERR_PTR(-EINVAL);
	dbuf = daedalus_vb_dmabuf(job->vb[index], size);
	if (!IS_ERR(dbuf) && index == 1)
		job->sr->cap_taken = true;
	return dbuf;
}

/*
 * The daemon is not trusted: reserved fields zero, lengths that add up, an
 * error without a picture, and a picture of exactly the layout's bytes only
 * from a daemon that took the CAPTURE buffer; no picture without an error
 * only while the CAPTURE buffer is held. Called with the bridge lock held.
 */
static bool daedalus_sl_resp_valid(const struct daedalus_reply *reply,
				   u32 status, const void *payload, u32 len)
{
	const struct daedalus_sl_reply *sr =
		container_of(reply, struct daedalus_sl_reply, reply);
	const struct daedalus_request_decode_resp *resp = payload;
	unsigned int i;

	if (status)
		return true; /* the daemon could not serve it: the job fails */
	if (len < sizeof(*resp))
		return false;
	for (i = 0; i < ARRAY_SIZE(resp->reserved); i++)
		if (resp->reserved[i])
			return false;
	if (resp->msg_len > DAEDALUS_MAX_MSG ||
	    len != sizeof(*resp) + resp->msg_len || resp->error > MAX_ERRNO)
		return false;
	if (resp->error)
		return !resp->bytes;
	if (resp->bytes)
		return resp->bytes == sr->sizeimage && sr->cap_taken;
	return sr->hold;
}

/*
 * Fills the file's DECODE_REQUEST for the job of @src (in request @req) into
 * @dst: the buffers' places and the CAPTURE layout, then every compound
 * control of the codec with the value V4L2 applied for this request, and
 * whether the request set it. The caller applied the request's controls.
 * Return: the message's length, or -E2BIG (controls beyond
 * DAEDALUS_REQUEST_CTRLS_MAX; none of the node's are).
 */
static int daedalus_sl_build(struct daedalus_sl_ctx *ctx,
			     struct media_request *req,
			     struct vb2_v4l2_buffer *src,
			     struct vb2_v4l2_buffer *dst, u32 flags)
{
	const struct daedalus_coded_fmt *row =
		daedalus_coded_fmt_by_codec(ctx->codec->codec);
	const struct v4l2_pix_format_mplane *cap = &ctx->base.cap_fmt;
	struct daedalus_request_decode *msg = ctx->msg;
	u8 *pos = (u8 *)(msg + 1), *end = pos + DAEDALUS_REQUEST_CTRLS_MAX;
	struct v4l2_ctrl_handler *req_hdl;
	struct daedalus_request_ctrl *rc;
	struct v4l2_ctrl *ctrl;
	u32 bytes, size, padded;
	unsigned int i;
	int ret = 0;

	memset(msg, 0, sizeof(*msg));
	bytes = vb2_get_plane_payload(&src->vb2_buf, 0);
	msg->bitstream_offset = min(src->vb2_buf.planes[0].data_offset, bytes);
	msg->bitstream_len = bytes - msg->bitstream_offset;
	msg->timestamp = src->vb2_buf.timestamp;
	msg->codec = ctx->codec->codec;
	msg->flags = flags;
	msg->out_index = src->vb2_buf.index;
	msg->cap_index = dst->vb2_buf.index;
	msg->pixfmt = daedalus_find_decoded_fmt(&ctx->base,
						cap->pixelformat)->pixfmt;
	msg->width = cap->width;
	msg->height = cap->height;
	msg->bytesperline = cap->plane_fmt[0].bytesperline;
	msg->sizeimage = cap->plane_fmt[0].sizeimage;

	req_hdl = v4l2_ctrl_request_hdl_find(req, &ctx->hdl);
	for (i = 0; row->ctrls && i < row->ctrls->num; i++) {
		ctrl = v4l2_ctrl_find(&ctx->hdl, row->ctrls->cfgs[i].id);
		if (!ctrl || !ctrl->is_ptr)
			continue; /* the menus have one value each */
		rc = (struct daedalus_request_ctrl *)pos;
		v4l2_ctrl_lock(ctrl); /* against S_EXT_CTRLS outside requests */
		size = ctrl->elems * ctrl->elem_size;
		padded = ALIGN(size, 8);
		if (sizeof(*rc) + padded > end - pos) {
			v4l2_ctrl_unlock(ctrl);
			ret = -E2BIG;
			break;
		}
		rc->id = ctrl->id;
		rc->flags = 0;
		rc->size = size;
		rc->elems = ctrl->elems;
		memcpy(rc + 1, ctrl->p_cur.p, size);
		memset((u8 *)(rc + 1) + size, 0, padded - size);
		v4l2_ctrl_unlock(ctrl);
		if (req_hdl && v4l2_ctrl_request_hdl_ctrl_find(req_hdl, ctrl->id))
			rc->flags |= DAEDALUS_CTRL_IN_REQUEST;
		pos += sizeof(*rc) + padded;
		msg->nr_ctrls++;
	}
	if (req_hdl)
		v4l2_ctrl_request_hdl_put(req_hdl);
	if (ret)
		return ret;
	msg->ctrls_len = pos - (u8 *)(msg + 1);
	return sizeof(*msg) + msg->ctrls_len;
}

/*
 * Sends the job's DECODE_REQUEST (@len bytes of the file's message) and
 * waits for the answer. Return: 0 when the daemon wrote the picture (or,
 * with a held CAPTURE buffer, will write it later), else an error.
 */
static int daedalus_sl_send(struct daedalus_sl_ctx *ctx, size_t len,
			    struct vb2_v4l2_buffer *src,
			    struct vb2_v4l2_buffer *dst)
{
	struct daedalus_request_decode *msg = ctx->msg;
	struct daedalus_dev *dev = ctx->base.dev;
	struct daedalus_sl_reply sr = {
		.reply.validate	= daedalus_sl_resp_valid,
		.sizeimage	= msg->sizeimage,
		.hold		= msg->flags & DAEDALUS_REQUEST_HOLD,
	};
	struct daedalus_sl_job job = {
		.attach.get	= daedalus_sl_get,
		.vb		= { &src->vb2_buf, &dst->vb2_buf },
		.sr		= &sr,
	};
	const struct daedalus_request_decode_resp *resp = &sr.answer.resp;
	int ret;

	sr.reply.buf = &sr.answer;
	sr.reply.max_len = sizeof(sr.answer);
	msg->stream_id = ctx->stream.id;
	ctx->stream.codec = msg->codec;
	ctx->stream.used = true;
	ret = daedalus_bridge_call_attached(dev, &ctx->caller,
					    DAEDALUS_MSG_DECODE_REQUEST, msg,
					    len, &job.attach, &sr.reply);
	if (ret)
		return ret;
	if (sr.reply.status)
		return -EIO;
	if (resp->error) {
		/* The daemon's words: printed escaped. */
		dev_warn_ratelimited(&dev->pdev->dev,
				     "stream %llu: picture not decoded (%u): %*pE\n",
				     ctx->stream.id, resp->error,
				     (int)resp->msg_len, sr.answer.msg);
		return -resp->error;
	}
	return 0;
}

/**
 * daedalus_sl_run() - one job: a request's OUTPUT buffer into a CAPTURE buffer
 * @work: the file's run_work.
 *
 * Context: a work item queued by device_run; sleeps (the daemon's round
 * trip) with none of the file's locks held. Finishes the job on every path,
 * which STREAMOFF and close wait for.
 */
static void daedalus_sl_run(struct work_struct *work)
{
	struct daedalus_sl_ctx *ctx =
		container_of(work, struct daedalus_sl_ctx, run_work);
	struct daedalus_sl *sl = daedalus_dev_sl(ctx->base.dev);
	struct v4l2_m2m_ctx *m2m = ctx->base.fh.m2m_ctx;
	enum vb2_buffer_state state = VB2_BUF_STATE_ERROR;
	struct vb2_v4l2_buffer *src, *dst;
	struct media_request *req;
	bool aborting;
	u32 flags = 0;
	int ret;

	src = v4l2_m2m_next_src_buf(m2m);
	dst = v4l2_m2m_next_dst_buf(m2m);
	req = src->vb2_buf.req_obj.req; /* OUTPUT requires requests */
	ret = req ? v4l2_ctrl_request_setup(req, &ctx->hdl) : -EINVAL;
	v4l2_m2m_buf_copy_metadata(src, dst, true);

	mutex_lock(&ctx->lock);
	src->sequence = ctx->out_sequence++;
	if (ctx->new_frame) {
		dst->sequence = ctx->cap_sequence++;
		flags |= DAEDALUS_REQUEST_NEW_FRAME;
	}
	if (ctx->reset) {
		flags |= DAEDALUS_REQUEST_RESET;
		ctx->reset = false;
	}
	aborting = ctx->aborting;
	mutex_unlock(&ctx->lock);
	if (src->flags & V4L2_BUF_FLAG_M2M_HOLD_CAPTURE_BUF)
		flags |= DAEDALUS_REQUEST_HOLD;

	if (!ret)
		ret = daedalus_sl_build(ctx, req, src, dst, flags);
	/* The values are in the message: the request's controls are done. */
	v4l2_ctrl_request_complete(req, &ctx->hdl);
	if (ret >= 0)
		ret = aborting ? -ECANCELED :
		      daedalus_sl_send(ctx, ret, src, dst);
	if (!ret)
		state = VB2_BUF_STATE_DONE;
	else if (ret != -ECANCELED)
		dev_warn_ratelimited(&ctx->base.dev->pdev->dev,
				     "stream %llu: OUTPUT buffer %u not decoded: %d\n",
				     ctx->stream.id, src->vb2_buf.index, ret);
	vb2_set_plane_payload(&dst->vb2_buf, 0,
			      ret ? 0 : ctx->base.cap_fmt.plane_fmt[0].sizeimage);
	v4l2_m2m_buf_done_and_job_finish(sl->m2m_dev, m2m, state);
}

/* v4l2-mem2mem's job: run it in the file's work item, never inline. */
static void daedalus_sl_device_run(void *priv)
{
	struct daedalus_sl_ctx *ctx = priv;

	mutex_lock(&ctx->lock);
	ctx->new_frame = ctx->base.fh.m2m_ctx->new_frame;
	mutex_unlock(&ctx->lock);
	queue_work(system_unbound_wq, &ctx->run_work);
}

/*
 * STREAMOFF or close wants the running job to end now: it fails at once if
 * it has not reached the daemon, and its bridge request is cancelled if it
 * has. Stopping the queue (daedalus_sl_stop_streaming()) undoes this.
 */
static void daedalus_sl_job_abort(void *priv)
{
	struct daedalus_sl_ctx *ctx = priv;

	mutex_lock(&ctx->lock);
	ctx->aborting = true;
	mutex_unlock(&ctx->lock);
	daedalus_bridge_cancel(ctx->base.dev, &ctx->caller);
}

static const struct v4l2_m2m_ops daedalus_sl_m2m_ops = {
	.device_run	= daedalus_sl_device_run,
	.job_abort	= daedalus_sl_job_abort,
};

static const struct vb2_ops daedalus_sl_qops;

/**
 * daedalus_sl_req_validate() - may this media request be queued?
 * @req: the request, being validated (MEDIA_REQUEST_IOC_QUEUE, with the
 *	media device's req_queue_mutex held).
 *
 * One OUTPUT buffer of the stateless node, nothing but that file's controls
 * besides, and every control the codec requires (struct daedalus_sl_codec)
 * set in the request.
 *
 * Return: 0, -ENOENT (no buffer, or a required control missing: "some
 * required configuration is missing in the request", media-request-ioc-
 * queue.rst), -EINVAL (more than one buffer, or another file's or node's
 * objects), or vb2's verdict.
 */
static int daedalus_sl_req_validate(struct media_request *req)
{
	struct daedalus_sl_ctx *ctx = NULL;
	struct media_request_object *obj;
	struct v4l2_ctrl_handler *hdl;
	const u32 *required;
	struct vb2_buffer *vb;
	u32 missing = 0;
	unsigned int i;

	list_for_each_entry(obj, &req->objects, list) {
		if (vb2_request_object_is_buffer(obj)) {
			vb = container_of(obj, struct vb2_buffer, req_obj);
			if (vb->vb2_queue->ops != &daedalus_sl_qops)
				return -EINVAL;
			ctx = vb2_get_drv_priv(vb->vb2_queue);
			break;
		}
	}
	if (!ctx)
		return -ENOENT;
	if (vb2_request_buffer_cnt(req) != 1)
		return -EINVAL;
	list_for_each_entry(obj, &req->objects, list)
		if (!vb2_request_object_is_buffer(obj) && obj->priv != &ctx->hdl)
			return -EINVAL;

	hdl = v4l2_ctrl_request_hdl_find(req, &ctx->hdl);
	if (!hdl)
		return -ENOENT;
	required = ctx->codec->required;
	for (i = 0; i < ARRAY_SIZE(ctx->codec->required) && required[i]; i++) {
		if (!v4l2_ctrl_request_hdl_ctrl_find(hdl, required[i])) {
			missing = required[i];
			break;
		}
	}
	v4l2_ctrl_request_hdl_put(hdl);
	if (missing) {
		dev_dbg(&ctx->base.dev->pdev->dev,
			"request without %s refused\n",
			v4l2_ctrl_get_name(missing));
		return -ENOENT;
	}
	return vb2_request_validate(req);
}

static const struct media_device_ops daedalus_sl_mdev_ops = {
	.req_validate	= daedalus_sl_req_validate,
	.req_queue	= v4l2_m2m_request_queue,
};

/* vb2 queue operations; called with the file's q_lock held. */

static int daedalus_sl_queue_setup(struct vb2_queue *vq,
				   unsigned int *nbuffers,
				   unsigned int *nplanes, unsigned int sizes[],
				   struct device *alloc_devs[])
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vq);
	u32 size = V4L2_TYPE_IS_OUTPUT(vq->type) ?
		   ctx->base.out_fmt.plane_fmt[0].sizeimage :
		   ctx->base.cap_fmt.plane_fmt[0].sizeimage;

	if (*nplanes)
		return *nplanes == 1 && sizes[0] >= size ? 0 : -EINVAL;
	*nplanes = 1;
	sizes[0] = size;
	return 0;
}

static int daedalus_sl_buf_out_validate(struct vb2_buffer *vb)
{
	to_vb2_v4l2_buffer(vb)->field = V4L2_FIELD_NONE;
	return 0;
}

static int daedalus_sl_buf_prepare(struct vb2_buffer *vb)
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	if (V4L2_TYPE_IS_OUTPUT(vb->vb2_queue->type))
		return 0;
	if (vb2_plane_size(vb, 0) < ctx->base.cap_fmt.plane_fmt[0].sizeimage)
		return -EINVAL;
	return 0;
}

static void daedalus_sl_buf_queue(struct vb2_buffer *vb)
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	v4l2_m2m_buf_queue(ctx->base.fh.m2m_ctx, to_vb2_v4l2_buffer(vb));
}

/* A buffer's request ends without a job: its controls are done. */
static void daedalus_sl_buf_request_complete(struct vb2_buffer *vb)
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	v4l2_ctrl_request_complete(vb->req_obj.req, &ctx->hdl);
}

static int daedalus_sl_start_streaming(struct vb2_queue *vq,
				       unsigned int count)
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vq);

	mutex_lock(&ctx->lock);
	if (V4L2_TYPE_IS_OUTPUT(vq->type)) {
		ctx->out_sequence = 0;
		ctx->reset = true;
	} else {
		ctx->cap_sequence = 0;
	}
	mutex_unlock(&ctx->lock);
	return 0;
}

/*
 * The queue's buffers go back in error, their requests' controls done. No
 * job runs: v4l2-mem2mem waited for it (after job_abort) before calling
 * this. The file's bridge requests may go to the daemon again.
 */
static void daedalus_sl_stop_streaming(struct vb2_queue *vq)
{
	struct daedalus_sl_ctx *ctx = vb2_get_drv_priv(vq);
	struct v4l2_m2m_ctx *m2m = ctx->base.fh.m2m_ctx;
	struct vb2_v4l2_buffer *vbuf;

	for (;;) {
		vbuf = V4L2_TYPE_IS_OUTPUT(vq->type) ?
		       v4l2_m2m_src_buf_remove(m2m) :
		       v4l2_m2m_dst_buf_remove(m2m);
		if (!vbuf)
			break;
		v4l2_ctrl_request_complete(vbuf->vb2_buf.req_obj.req, &ctx->hdl);
		v4l2_m2m_buf_done(vbuf, VB2_BUF_STATE_ERROR);
	}
	mutex_lock(&ctx->lock);
	ctx->aborting = false;
	mutex_unlock(&ctx->lock);
	daedalus_bridge_resume(ctx->base.dev, &ctx->caller);
}

static const struct vb2_ops daedalus_sl_qops = {
	.queue_setup		= daedalus_sl_queue_setup,
	.buf_out_validate	= daedalus_sl_buf_out_validate,
	.buf_prepare		= daedalus_sl_buf_prepare,
	.buf_queue		= daedalus_sl_buf_queue,
	.buf_request_complete	= daedalus_sl_buf_request_complete,
	.start_streaming	= daedalus_sl_start_streaming,
	.stop_streaming		= daedalus_sl_stop_streaming,
	.wait_prepare		= vb2_ops_wait_prepare,
	.wait_finish		= vb2_ops_wait_finish,
};

/*
 * Both queues: the stateful node's memory (phase 8.6's dma-sg on the
 * platform device, or vmalloc where its mappings bounce), timestamps
 * copied (the controls name reference pictures by them); OUTPUT takes
 * requests only.
 */
static int daedalus_sl_queue_init_one(struct daedalus_sl_ctx *ctx,
				      struct vb2_queue *vq,
				      enum v4l2_buf_type type)
{
	const struct daedalus_m2m_transport *t =
		&daedalus_dev_m2m(ctx->base.dev)->transport;

	vq->type = type;
	vq->io_modes = t->io_modes;
	vq->drv_priv = ctx;
	vq->buf_struct_size = sizeof(struct v4l2_m2m_buffer);
	vq->ops = &daedalus_sl_qops;
	vq->mem_ops = t->mem_ops;
	vq->dev = t->alloc_dev;
	vq->timestamp_flags = V4L2_BUF_FLAG_TIMESTAMP_COPY;
	vq->lock = &ctx->q_lock;
	if (V4L2_TYPE_IS_OUTPUT(type)) {
		vq->supports_requests = true;
		vq->requires_requests = true;
	}
	return vb2_queue_init(vq);
}

static int daedalus_sl_queue_init(void *priv, struct vb2_queue *src_vq,
				  struct vb2_queue *dst_vq)
{
	int ret;

	ret = daedalus_sl_queue_init_one(priv, src_vq,
					 V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE);
	if (ret)
		return ret;
	return daedalus_sl_queue_init_one(priv, dst_vq,
					  V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
}

/* The controls of every codec of the node (phase 8.1's codec files). */
static int daedalus_sl_init_ctrls(struct daedalus_sl_ctx *ctx)
{
	const struct daedalus_codec_ctrls *ctrls;
	const struct daedalus_sl_codec *codec;
	unsigned int i, j;

	v4l2_ctrl_handler_init(&ctx->hdl, 8);
	for (i = 0; (codec = daedalus_sl_codec_by_index(i)); i++) {
		ctrls = daedalus_coded_fmt_by_codec(codec->codec)->ctrls;
		for (j = 0; ctrls && j < ctrls->num; j++)
			v4l2_ctrl_new_custom(&ctx->hdl, &ctrls->cfgs[j], NULL);
	}
	return ctx->hdl.error;
}

static int daedalus_sl_open(struct file *file)
{
	struct daedalus_dev *dev = video_drvdata(file);
	struct daedalus_sl *sl = daedalus_dev_sl(dev);
	struct daedalus_sl_ctx *ctx;
	int ret;

	/*
	 * No device lock needed: the context is private to this file until
	 * daedalus_fh_add() links it. Memory is charged to the opener.
	 */
	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	ctx->msg = kzalloc(DAEDALUS_SL_MSG_SIZE, GFP_KERNEL_ACCOUNT);
	if (!ctx->msg) {
		ret = -ENOMEM;
		goto err_free_ctx;
	}
	ctx->base.dev = dev;
	mutex_init(&ctx->q_lock);
	mutex_init(&ctx->lock);
	INIT_WORK(&ctx->run_work, daedalus_sl_run);
	daedalus_caller_init(&ctx->caller, file->f_cred->fsuid);
	daedalus_stream_init(&ctx->stream);
	v4l2_fh_init(&ctx->base.fh, video_devdata(file));
	file->private_data = &ctx->base.fh;

	ret = daedalus_sl_init_ctrls(ctx);
	if (ret)
		goto err_free_ctrls;
	ctx->base.fh.ctrl_handler = &ctx->hdl;

	ctx->base.fh.m2m_ctx = v4l2_m2m_ctx_init(sl->m2m_dev, ctx,
						 daedalus_sl_queue_init);
	if (IS_ERR(ctx->base.fh.m2m_ctx)) {
		ret = PTR_ERR(ctx->base.fh.m2m_ctx);
		goto err_free_ctrls;
	}
	ctx->base.fh.m2m_ctx->q_lock = &ctx->q_lock;
	daedalus_sl_default_fmts(ctx);
	daedalus_sl_set_codec(ctx);
	daedalus_fh_add(&ctx->base.fh, file);
	return 0;

err_free_ctrls:
	v4l2_ctrl_handler_free(&ctx->hdl);
	v4l2_fh_exit(&ctx->base.fh);
	mutex_destroy(&ctx->lock);
	mutex_destroy(&ctx->q_lock);
	kfree(ctx->msg);
err_free_ctx:
	kfree(ctx);
	return ret;
}

/*
 * Never waits for the daemon: a running job is aborted (its bridge request
 * cancelled) and v4l2-mem2mem waits for it to finish, which is then quick.
 */
static int daedalus_sl_release(struct file *file)
{
	struct daedalus_sl_ctx *ctx = daedalus_file_to_sl(file);
	struct daedalus_dev *dev = ctx->base.dev;

	mutex_lock(&ctx->q_lock);
	v4l2_m2m_ctx_release(ctx->base.fh.m2m_ctx);
	mutex_unlock(&ctx->q_lock);
	/* The last job finished; its work item may still be returning. */
	cancel_work_sync(&ctx->run_work);
	daedalus_stream_close(dev, &ctx->stream);
	daedalus_fh_del(&ctx->base.fh, file);
	v4l2_fh_exit(&ctx->base.fh);
	v4l2_ctrl_handler_free(&ctx->hdl);
	mutex_destroy(&ctx->lock);
	mutex_destroy(&ctx->q_lock);
	kfree(ctx->msg);
	kfree(ctx);
	return 0;
}

static const struct v4l2_file_operations daedalus_sl_fops = {
	.owner		= THIS_MODULE,
	.open		= daedalus_sl_open,
	.release	= daedalus_sl_release,
	.poll		= v4l2_m2m_fop_poll,
	.unlocked_ioctl	= video_ioctl2,
	.mmap		= v4l2_m2m_fop_mmap,
};

static void daedalus_sl_vfd_release(struct video_device *vfd)
{
	/* vfd is embedded in struct daedalus_sl, which the layer's exit frees. */
}

/*
 * After phases 8.5 (the memory the queues use), 8.6 (the bridge's
 * GET_DMABUF, which reaches this layer's buffers through the attachment)
 * and 8.7 (the media device, not yet registered): the node's state and the
 * media device's request ops. Nothing is visible yet.
 */
static int daedalus_sl_init(struct daedalus_dev *dev)
{
	struct media_device *mdev = dev->v4l2_dev.mdev;
	struct daedalus_sl *sl;
	int ret;

	if (!mdev || !daedalus_dev_m2m(dev) || !daedalus_dev_bridge(dev))
		return -ENODEV;
	if (mdev->ops)
		return -EBUSY; /* another layer's ops: not ours to replace */

	sl = kzalloc(sizeof(*sl), GFP_KERNEL);
	if (!sl)
		return -ENOMEM;
	mutex_init(&sl->vdev_lock);
	sl->m2m_dev = v4l2_m2m_init(&daedalus_sl_m2m_ops);
	if (IS_ERR(sl->m2m_dev)) {
		ret = PTR_ERR(sl->m2m_dev);
		goto err_free;
	}
	sl->mdev = mdev;
	mdev->ops = &daedalus_sl_mdev_ops;
	daedalus_layer_set_priv(dev, &daedalus_stateless_layer, sl);
	return 0;

err_free:
	mutex_destroy(&sl->vdev_lock);
	kfree(sl);
	return ret;
}

/*
 * After phase 8.7's publish (the media device is registered): the node,
 * then its entities on the media device (source, decoder, sink, named after
 * the node), as for the stateful node.
 */
static int daedalus_sl_publish(struct daedalus_dev *dev)
{
	struct daedalus_sl *sl = daedalus_dev_sl(dev);
	struct video_device *vfd = &sl->vfd;
	int ret;

	strscpy(vfd->name, DAEDALUS_NAME "-stateless", sizeof(vfd->name));
	vfd->fops = &daedalus_sl_fops;
	vfd->ioctl_ops = &daedalus_sl_ioctl_ops;
	vfd->release = daedalus_sl_vfd_release;
	vfd->lock = &sl->vdev_lock;
	vfd->v4l2_dev = &dev->v4l2_dev;
	vfd->vfl_dir = VFL_DIR_M2M;
	vfd->device_caps = V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING;
	video_set_drvdata(vfd, dev);

	ret = video_register_device(vfd, VFL_TYPE_VIDEO, -1);
	if (ret) {
		v4l2_err(&dev->v4l2_dev,
			 "failed to register the stateless video device: %d\n",
			 ret);
		return ret;
	}
	ret = v4l2_m2m_register_media_controller(sl->m2m_dev, vfd,
						 MEDIA_ENT_F_PROC_VIDEO_DECODER);
	if (ret) {
		v4l2_err(&dev->v4l2_dev,
			 "failed to register the stateless media entities: %d\n",
			 ret);
		goto err_unregister_vdev;
	}
	v4l2_info(&dev->v4l2_dev, "registered %s (stateless)\n",
		  video_device_node_name(vfd));
	return 0;

err_unregister_vdev:
	video_unregister_device(vfd);
	return ret;
}

static void daedalus_sl_unpublish(struct daedalus_dev *dev)
{
	struct daedalus_sl *sl = daedalus_dev_sl(dev);

	v4l2_m2m_unregister_media_controller(sl->m2m_dev);
	video_unregister_device(&sl->vfd);
}

/* Runs once the last file of either node is closed (daedalus_v4l2_release()). */
static void daedalus_sl_exit(struct daedalus_dev *dev)
{
	struct daedalus_sl *sl = daedalus_dev_sl(dev);

	sl->mdev->ops = NULL;
	daedalus_layer_set_priv(dev, &daedalus_stateless_layer, NULL);
	v4l2_m2m_release(sl->m2m_dev);
	mutex_destroy(&sl->vdev_lock);
	kfree(sl);
}

const struct daedalus_layer daedalus_stateless_layer = {
	.name		= "8.9-stateless",
	.init		= daedalus_sl_init,
	.publish	= daedalus_sl_publish,
	.unpublish	= daedalus_sl_unpublish,
	.exit		= daedalus_sl_exit,
};
