// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.5 layer, the stateful memory-to-memory decoder.
 *
 * The application drives the kernel's stateful decoder interface
 * (Documentation/userspace-api/media/v4l/dev-decoder.rst); the daemon does
 * the decoding. Start reading at daedalus_m2m_pump(): it runs in a work item
 * per open file and moves buffers in three steps, as long as one applies:
 *
 *  - deliver: FETCH the oldest frame the daemon holds into a CAPTURE buffer
 *    (after a SOURCE_CHANGE only once CAPTURE is set up again);
 *  - feed: send an OUTPUT buffer's bytes as FEED; the answer lists the frames
 *    it completed, which the kernel queues in ctx->pending;
 *  - drain: after DECODER_CMD STOP, FLUSH the daemon, then mark the last
 *    CAPTURE buffer with V4L2_BUF_FLAG_LAST and signal V4L2_EVENT_EOS
 *    (when CAPTURE is not streaming yet: the event now, and LAST on the
 *    first CAPTURE buffer queued later).
 *
 * v4l2-mem2mem provides the two vb2 queues and their ioctls; its job
 * scheduler is not used (a stateful decoder consumes OUTPUT before CAPTURE
 * exists). Every bridge call is bounded by the bridge's watchdog: a job the
 * daemon does not answer ends with its buffer in error.
 *
 * How a FEED carries the bitstream and a FETCH the pixels is the transport's
 * (struct daedalus_m2m_transport, in this layer's state): this layer's is
 * the inline one (daedalus_inline_transport), whose messages carry copies of
 * the bytes; a later layer may install another.
 *
 * Locking: ctx->q_lock is the vb2 queues' lock (this file's queue ioctls);
 * ctx->lock guards the pump's state and the CAPTURE format and is never held
 * across a daemon round trip; the pump takes it around each decision. A
 * stopping queue or a closing file cancels its bridge requests, so neither
 * STREAMOFF nor close() waits for the daemon. Lock order: the video device's
 * lock (non-queue ioctls), then ctx->q_lock, then ctx->lock.
 */
#include <linux/atomic.h>
#include <linux/cred.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <media/v4l2-event.h>
#include <media/videobuf2-vmalloc.h>

#include "daedalus-bridge.h"
#include "daedalus-m2m.h"

/* FLUSHes of one drain sent again after their answer timed out. */
#define DAEDALUS_FLUSH_RETRIES	2

/* Most pixel bytes one FETCH answer carries (the inline transport's limit). */
#define DAEDALUS_INLINE_MAX	(DAEDALUS_MAX_PAYLOAD - \
				 sizeof(struct daedalus_fetch_resp))

static unsigned int max_contexts = 128;
module_param(max_contexts, uint, 0644);
MODULE_PARM_DESC(max_contexts,
		 "most open files of the decoder node at once; open() beyond gets EBUSY");

static unsigned int max_buffer_mib = 1024;
module_param(max_buffer_mib, uint, 0644);
MODULE_PARM_DESC(max_buffer_mib,
		 "most MMAP buffer memory (MiB) all files of the node may hold; REQBUFS/CREATE_BUFS beyond get fewer buffers or ENOMEM");

static atomic_t daedalus_m2m_nr_ctx = ATOMIC_INIT(0);
static atomic_long_t daedalus_m2m_buffer_bytes = ATOMIC_LONG_INIT(0);

static bool daedalus_pipelined(struct daedalus_m2m_ctx *ctx)
{
	return daedalus_dev_m2m(ctx->base.dev)->pipelined;
}

/* Runs the pump (both pumps when pipelined) once more. */
void daedalus_m2m_kick(struct daedalus_m2m_ctx *ctx)
{
	queue_work(system_unbound_wq, &ctx->work);
	if (daedalus_pipelined(ctx))
		queue_work(system_unbound_wq, &ctx->feed_work);
}

static struct daedalus_dev *daedalus_m2m_dev(struct daedalus_m2m_ctx *ctx)
{
	return ctx->base.dev;
}

static struct v4l2_m2m_ctx *daedalus_m2m_ctx(struct daedalus_m2m_ctx *ctx)
{
	return ctx->base.fh.m2m_ctx;
}

static const struct daedalus_m2m_transport *
daedalus_transport(struct daedalus_m2m_ctx *ctx)
{
	return &daedalus_dev_m2m(daedalus_m2m_dev(ctx))->transport;
}

/* The pending ring; called with ctx->lock held. */
static struct daedalus_frame_info *daedalus_pending_head(struct daedalus_m2m_ctx *ctx)
{
	return ctx->nr_pending ? &ctx->pending[ctx->pending_head] : NULL;
}

static void daedalus_pending_pop(struct daedalus_m2m_ctx *ctx)
{
	ctx->pending_head = (ctx->pending_head + 1) % DAEDALUS_M2M_MAX_PENDING;
	ctx->nr_pending--;
}

/* Room for one more FEED answer (at most DAEDALUS_MAX_FRAMES frames). */
static bool daedalus_pending_room(struct daedalus_m2m_ctx *ctx)
{
	return ctx->nr_pending <= DAEDALUS_M2M_MAX_PENDING - DAEDALUS_MAX_FRAMES;
}

static void daedalus_pending_push(struct daedalus_m2m_ctx *ctx,
				  const struct daedalus_frame_info *f)
{
	unsigned int tail;

	tail = (ctx->pending_head + ctx->nr_pending) % DAEDALUS_M2M_MAX_PENDING;
	ctx->pending[tail] = *f;
	ctx->nr_pending++;
}

static void daedalus_queue_event(struct daedalus_m2m_ctx *ctx, u32 type)
{
	struct v4l2_event ev = { .type = type };

	if (type == V4L2_EVENT_SOURCE_CHANGE)
		ev.u.src_change.changes = V4L2_EVENT_SRC_CH_RESOLUTION;
	v4l2_event_queue_fh(&ctx->base.fh, &ev);
}

/*
 * The stream cannot be decoded exactly: every further queue operation gets
 * -EIO (vb2_queue_error(), dev-decoder.rst's fatal error), so no buffer with
 * pixels that are not the decoder's reaches the client; poll reports the
 * file ready, so that the client sees the -EIO (daedalus_m2m_poll()).
 * The buffers stay with the driver until their queue is stopped; stopping
 * OUTPUT ends the state. Called with ctx->lock held.
 */
static void daedalus_m2m_fatal(struct daedalus_m2m_ctx *ctx, const char *why)
{
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);

	if (ctx->fatal)
		return;
	/* @why may be the daemon's words: printed escaped. */
	dev_err_ratelimited(&daedalus_m2m_dev(ctx)->pdev->dev,
			    "stream %llu refused: %*pE\n", ctx->stream.id,
			    (int)strnlen(why, DAEDALUS_MAX_MSG), why);
	ctx->fatal = true;
	ctx->nr_pending = 0;
	vb2_queue_error(v4l2_m2m_get_src_vq(m2m));
	vb2_queue_error(v4l2_m2m_get_dst_vq(m2m));
}

/*
 * poll() of a refused stream: readable and writable, not EPOLLERR (which
 * vb2 would report), so that a client's next DQBUF reports the -EIO. FFmpeg
 * 5.1 never dequeues after EPOLLERR and would wait forever for its drain.
 */
static __poll_t daedalus_m2m_poll(struct file *file, poll_table *wait)
{
	__poll_t mask;

	mask = v4l2_m2m_fop_poll(file, wait);
	if (daedalus_m2m_refused(daedalus_file_to_m2m(file)))
		mask = (mask & EPOLLPRI) | EPOLLIN | EPOLLRDNORM | EPOLLOUT |
		       EPOLLWRNORM;
	return mask;
}

/*
 * What sets @fmt apart from @other, in a refusal: its depth when theirs
 * differ ("10-bit"), else its chroma subsampling ("4:2:2").
 */
static const char *daedalus_fmt_trait(const struct daedalus_decoded_fmt *fmt,
				      const struct daedalus_decoded_fmt *other,
				      char *buf, size_t len)
{
	if (fmt->depth == other->depth)
		return fmt->chroma;
	snprintf(buf, len, "%u-bit", fmt->depth);
	return buf;
}

/*
 * Refuses a stream whose frames need @want (NULL: a layout the format
 * table lacks) when CAPTURE has @have: the node's own format, which is all
 * it offers of the kind (@set_up false: "10-bit frames (P010); CAPTURE
 * offers 8-bit only"), or the format CAPTURE was set up and streaming in
 * before the header (@set_up true: "4:2:2 frames (NV16), but CAPTURE was
 * set up 4:2:0 before the header"). The words come from the format table.
 */
static void daedalus_refuse_fmt(struct daedalus_m2m_ctx *ctx,
				const struct daedalus_decoded_fmt *want,
				const struct daedalus_decoded_fmt *have,
				bool set_up)
{
	char want_bits[8], have_bits[8], why[96];
	const char *wants, *has;

	if (!want || !have) {
		daedalus_m2m_fatal(ctx, "its frames need a CAPTURE format the node lacks");
		return;
	}
	wants = daedalus_fmt_trait(want, have, want_bits, sizeof(want_bits));
	has = daedalus_fmt_trait(have, want, have_bits, sizeof(have_bits));
	if (set_up)
		snprintf(why, sizeof(why),
			 "%s frames (%s), but CAPTURE was set up %s before the header",
			 wants, want->name, has);
	else
		snprintf(why, sizeof(why), "%s frames (%s); CAPTURE offers %s only",
			 wants, want->name, has);
	daedalus_m2m_fatal(ctx, why);
}

/*
 * The stream's picture size is now @f's: set the CAPTURE format from it and
 * tell the application, which sets CAPTURE up again (dev-decoder.rst,
 * "Initialization" and "Dynamic resolution change"), with the stream's
 * colorimetry where @f signals it, else the application's (OUTPUT's).
 * Called with ctx->lock held.
 *
 * One exception: the stream's first picture size when CAPTURE already
 * streams with exactly the format it needs. Clients that set CAPTURE up
 * before the header is parsed (FFmpeg's and GStreamer 1.22's v4l2 decoders)
 * then just get their frames; FFmpeg ignores an event that changes nothing
 * and would wait forever for a re-setup, and GStreamer answers any event by
 * tearing CAPTURE down, losing the frames already in it.
 */
static void daedalus_new_geometry(struct daedalus_m2m_ctx *ctx,
				  const struct daedalus_frame_info *f)
{
	struct v4l2_pix_format_mplane *cap = &ctx->base.cap_fmt;
	const struct daedalus_m2m_transport *t = daedalus_transport(ctx);
	struct daedalus_dev *dev = daedalus_m2m_dev(ctx);
	const struct daedalus_decoded_fmt *fmt;
	struct v4l2_pix_format_mplane old = *cap;
	bool initial = !ctx->have_geometry;

	fmt = daedalus_decoded_fmt_by_pixfmt(dev, f->pixfmt);
	if (!fmt) {
		/* compared with NV12, the node's own format (never opt-in) */
		daedalus_refuse_fmt(ctx, daedalus_decoded_fmt_by_wire(f->pixfmt),
				    daedalus_decoded_fmt_by_wire(DAEDALUS_PIXFMT_NV12),
				    false);
		return;
	}
	/*
	 * CAPTURE set up and streaming before the header, in another format
	 * than the stream's (another depth or chroma subsampling): refused
	 * rather than announced. FFmpeg's v4l2m2m decoders (5.1 to 7.1) set
	 * NV12 up before the header, map no P010, and take a SOURCE_CHANGE
	 * whose size is the one they have for no change at all: they would
	 * wait for frames forever. A client that sets CAPTURE up after the
	 * event gets it.
	 */
	if (initial && old.pixelformat != fmt->fourcc &&
	    vb2_is_streaming(v4l2_m2m_get_dst_vq(daedalus_m2m_ctx(ctx)))) {
		daedalus_refuse_fmt(ctx, fmt,
				    daedalus_find_decoded_fmt(&ctx->base,
							      old.pixelformat),
				    true);
		return;
	}
	cap->width = f->width;
	cap->height = f->height;
	cap->pixelformat = fmt->fourcc;
	/* CAPTURE now offers the stream's format only (daedalus_ctx) */
	WRITE_ONCE(ctx->base.stream_fourcc, fmt->fourcc);
	daedalus_fill_decoded_fmt(&ctx->base, cap);
	daedalus_stream_colour(cap, &ctx->base.out_fmt, f);
	ctx->visible_width = f->width;
	ctx->visible_height = f->height;
	ctx->have_geometry = true;
	ctx->src_change = !(initial &&
			    vb2_is_streaming(v4l2_m2m_get_dst_vq(daedalus_m2m_ctx(ctx))) &&
			    old.pixelformat == cap->pixelformat &&
			    old.width == cap->width && old.height == cap->height &&
			    old.plane_fmt[0].bytesperline ==
			    cap->plane_fmt[0].bytesperline &&
			    old.plane_fmt[0].sizeimage == cap->plane_fmt[0].sizeimage);
	ctx->failed = t->frame_max &&
		      cap->plane_fmt[0].sizeimage > t->frame_max;
	if (ctx->failed)
		dev_err_ratelimited(&dev->pdev->dev,
				    "%ux%u frames need %u bytes; the inline transport carries at most %u (phase 8.6 lifts this)\n",
				    f->width, f->height,
				    cap->plane_fmt[0].sizeimage, t->frame_max);
	if (ctx->src_change) {
		ctx->drain_sizeimage = old.plane_fmt[0].sizeimage;
		daedalus_queue_event(ctx, V4L2_EVENT_SOURCE_CHANGE);
	}
}

/* Same size and same CAPTURE format (depths and chroma differ) as now. */
static bool daedalus_same_geometry(struct daedalus_m2m_ctx *ctx,
				   const struct daedalus_frame_info *f)
{
	const struct daedalus_decoded_fmt *fmt =
		daedalus_decoded_fmt_by_pixfmt(daedalus_m2m_dev(ctx), f->pixfmt);

	return ctx->have_geometry && f->width == ctx->visible_width &&
	       f->height == ctx->visible_height && fmt &&
	       fmt->fourcc == ctx->base.stream_fourcc;
}

/* CAPTURE buffers done and not yet dequeued by the application. */
static bool daedalus_cap_undequeued(struct daedalus_m2m_ctx *ctx)
{
	struct vb2_queue *vq = v4l2_m2m_get_dst_vq(daedalus_m2m_ctx(ctx));
	unsigned long flags;
	bool any;

	spin_lock_irqsave(&vq->done_lock, flags);
	any = !list_empty(&vq->done_list);
	spin_unlock_irqrestore(&vq->done_lock, flags);
	return any;
}

/* Hands out a CAPTURE buffer with no picture, flagged LAST; ctx->lock held. */
static void daedalus_cap_last(struct daedalus_m2m_ctx *ctx,
			      struct vb2_v4l2_buffer *dst)
{
	vb2_set_plane_payload(&dst->vb2_buf, 0, 0);
	dst->flags |= V4L2_BUF_FLAG_LAST;
	dst->field = V4L2_FIELD_NONE;
	dst->sequence = ctx->cap_sequence++;
	v4l2_m2m_buf_done(dst, VB2_BUF_STATE_DONE);
}

struct daedalus_fetch_reply {
	struct daedalus_reply reply;
	struct daedalus_frame_info want;
	u32 bytes;
};

/**
 * daedalus_m2m_fetch_frame_valid() - does a FETCH answer name the frame asked for?
 * @want: the frame the FETCH asked for, as the FEED answer listed it.
 * @resp: the fixed part of the answer (at least that many bytes received).
 *
 * Reserved fields zero and the frame exactly @want, its colour description
 * included; the byte counts are the transport's to check. Called with the
 * bridge lock held (a reply's validate); does not sleep.
 *
 * Return: true when the answer describes @want.
 */
bool daedalus_m2m_fetch_frame_valid(const struct daedalus_frame_info *want,
				    const struct daedalus_fetch_resp *resp)
{
	const struct daedalus_frame_info *f = &resp->frame;

	if (resp->reserved[0] || resp->reserved[1] || resp->reserved[2] ||
	    f->reserved)
		return false;
	return f->width == want->width && f->height == want->height &&
	       f->pixfmt == want->pixfmt && f->timestamp == want->timestamp &&
	       f->digest == want->digest && f->primaries == want->primaries &&
	       f->transfer == want->transfer && f->matrix == want->matrix &&
	       f->range == want->range;
}

/* A FETCH answer must describe the frame we expect, with exact sizes. */
static bool daedalus_fetch_valid(const struct daedalus_reply *reply, u32 status,
				 const void *payload, u32 len)
{
	const struct daedalus_fetch_reply *fr =
		container_of(reply, struct daedalus_fetch_reply, reply);
	const struct daedalus_fetch_resp *resp = payload;

	if (status)
		return true;
	if (len < sizeof(*resp) ||
	    !daedalus_m2m_fetch_frame_valid(&fr->want, resp))
		return false;
	return resp->bytes == fr->bytes && len == sizeof(*resp) + resp->bytes;
}

/*
 * The inline transport's FETCH: the pixels come back inside the answer and
 * are copied into @dst's buffer. Runs in the pump without ctx->lock. The
 * destination was checked against the size written (daedalus_deliver()).
 */
static int daedalus_fetch_inline(struct daedalus_m2m_ctx *ctx,
				 const struct daedalus_frame_info *want,
				 const struct daedalus_fetch_dst *dst)
{
	struct daedalus_fetch_reply fr = {
		.reply.max_len	= DAEDALUS_MAX_PAYLOAD,
		.reply.validate	= daedalus_fetch_valid,
		.want		= *want,
		.bytes		= dst->buf ? dst->sizeimage : 0,
	};
	struct daedalus_fetch_req req = {
		.stream_id	= ctx->stream.id,
		.timestamp	= want->timestamp,
		.digest		= want->digest,
		.flags		= dst->buf ? 0 : DAEDALUS_FETCH_DISCARD,
		.bytesperline	= dst->bytesperline,
		.height		= dst->height,
		.max_bytes	= dst->sizeimage,
	};
	int ret;

	if (!ctx->fetch) {
		ctx->fetch = kvmalloc(DAEDALUS_MAX_PAYLOAD, GFP_KERNEL_ACCOUNT);
		if (!ctx->fetch)
			return -ENOMEM;
	}
	fr.reply.buf = ctx->fetch;
	ret = daedalus_bridge_call_as(daedalus_m2m_dev(ctx), &ctx->cap_caller,
				      DAEDALUS_MSG_FETCH, &req, sizeof(req),
				      &fr.reply);
	if (ret)
		return ret;
	if (fr.reply.status)
		return -EIO;
	if (dst->buf)
		memcpy(vb2_plane_vaddr(&dst->buf->vb2_buf, 0),
		       (u8 *)ctx->fetch + sizeof(struct daedalus_fetch_resp),
		       fr.bytes);
	return 0;
}

/* CAPTURE buffers may be taken; ctx->lock held. */
static bool daedalus_cap_ready(struct daedalus_m2m_ctx *ctx)
{
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);

	return !ctx->closing && !ctx->out_stopping && !ctx->cap_stopping &&
	       !ctx->fatal && vb2_is_streaming(v4l2_m2m_get_dst_vq(m2m)) &&
	       v4l2_m2m_num_dst_bufs_ready(m2m);
}

/* The pump lets go of its CAPTURE buffer; ctx->lock held. */
static void daedalus_cap_release(struct daedalus_m2m_ctx *ctx)
{
	WRITE_ONCE(ctx->cap_busy, false);
	wake_up(&ctx->pump_wq);
}

/*
 * Step 1: a decoded frame into a CAPTURE buffer. The buffer's size is
 * checked against the frame being written, now: buffers queued before a
 * SOURCE_CHANGE were checked against the format of that moment only. A
 * buffer too small is returned with an error and the frame waits for one
 * that fits (the application must set CAPTURE up again).
 */
static bool daedalus_deliver(struct daedalus_m2m_ctx *ctx)
{
	const struct v4l2_pix_format_mplane *cap = &ctx->base.cap_fmt;
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);
	struct daedalus_fetch_dst dst = {};
	struct daedalus_frame_info *head, want;
	struct vb2_v4l2_buffer *buf;
	bool fits, corrupt, last = false;
	int ret;

	mutex_lock(&ctx->lock);
	head = daedalus_pending_head(ctx);
	/*
	 * A refused stream delivers nothing (and its refusal, made here from
	 * the head frame, must not be made again and again).
	 */
	if (!head || ctx->src_change || ctx->fatal)
		goto idle;
	if (!daedalus_same_geometry(ctx, head)) {
		/*
		 * Implicit drain: the event, then an empty LAST buffer after the
		 * old geometry's frames (dev-decoder.rst's order). A client that
		 * sees the LAST buffer first (GStreamer 1.22 checks events only
		 * before buffers) would take it for the end of the stream.
		 */
		buf = NULL;
		if (ctx->have_geometry) {
			/*
			 * Clients look at events before buffers (GStreamer
			 * 1.22, FFmpeg 5.1): one that sees the event while a
			 * frame of the old geometry waits to be dequeued sets
			 * CAPTURE up again and loses that frame. The event
			 * waits until the application has dequeued them all
			 * (daedalus_buf_finish() kicks the pump).
			 */
			WRITE_ONCE(ctx->change_waits, daedalus_cap_undequeued(ctx));
			if (ctx->change_waits || !daedalus_cap_ready(ctx))
				goto idle;
			buf = v4l2_m2m_dst_buf_remove(m2m);
		}
		daedalus_new_geometry(ctx, head);
		if (buf)
			daedalus_cap_last(ctx, buf);
		mutex_unlock(&ctx->lock);
		return true;
	}
	if (!daedalus_cap_ready(ctx))
		goto idle;

	buf = v4l2_m2m_dst_buf_remove(m2m);
	want = *head;
	dst.bytesperline = cap->plane_fmt[0].bytesperline;
	dst.height = cap->height;
	dst.sizeimage = cap->plane_fmt[0].sizeimage;
	/* Decoded with errors: the buffer is handed out in ERROR, empty. */
	corrupt = want.flags & DAEDALUS_FRAME_CORRUPT;
	fits = ctx->failed || corrupt ||
	       (vb2_plane_size(&buf->vb2_buf, 0) >= dst.sizeimage &&
		(!daedalus_transport(ctx)->kernel_map ||
		 vb2_plane_vaddr(&buf->vb2_buf, 0)));
	if (!fits) {
		dev_warn_ratelimited(&daedalus_m2m_dev(ctx)->pdev->dev,
				     "stream %llu: CAPTURE buffer %u holds %lu bytes, the frame needs %u\n",
				     ctx->stream.id, buf->vb2_buf.index,
				     vb2_plane_size(&buf->vb2_buf, 0),
				     dst.sizeimage);
		buf->sequence = ctx->cap_sequence++;
		vb2_set_plane_payload(&buf->vb2_buf, 0, 0);
		v4l2_m2m_buf_done(buf, VB2_BUF_STATE_ERROR);
		mutex_unlock(&ctx->lock);
		return true;
	}
	if (!ctx->failed && !corrupt)
		dst.buf = buf;
	WRITE_ONCE(ctx->cap_busy, true);
	mutex_unlock(&ctx->lock);

	/* Without a buffer the FETCH discards: both sides forget the frame. */
	ret = daedalus_transport(ctx)->fetch(ctx, &want, &dst);
	if (!ret && corrupt)
		ret = -EILSEQ;
	else if (!ret && !dst.buf)
		ret = -E2BIG; /* dropped: the frame does not fit the transport */

	mutex_lock(&ctx->lock);
	if (ret == -ECANCELED || ctx->fatal) {
		/*
		 * CAPTURE or OUTPUT is stopping, or the stream was refused
		 * meanwhile (pipelined: by a FEED answer): the buffer goes back.
		 */
		v4l2_m2m_buf_queue(m2m, buf);
		daedalus_cap_release(ctx);
		mutex_unlock(&ctx->lock);
		return true;
	}
	/* A refusal on the other pump (pipelined) may have emptied the ring. */
	if (ctx->nr_pending)
		daedalus_pending_pop(ctx);
	buf->vb2_buf.timestamp = want.timestamp;
	buf->field = V4L2_FIELD_NONE;
	buf->flags &= ~(V4L2_BUF_FLAG_KEYFRAME | V4L2_BUF_FLAG_LAST);
	if (want.flags & DAEDALUS_FRAME_KEY)
		buf->flags |= V4L2_BUF_FLAG_KEYFRAME;
	buf->sequence = ctx->cap_sequence++;
	vb2_set_plane_payload(&buf->vb2_buf, 0, ret ? 0 : dst.sizeimage);
	if (!ret && ctx->draining && ctx->flushed && !ctx->flushing &&
	    !ctx->nr_pending) {
		/* The drain's last frame carries LAST itself. */
		buf->flags |= V4L2_BUF_FLAG_LAST;
		ctx->draining = false;
		ctx->stopped = true;
		last = true;
	}
	/*
	 * Done under ctx->lock, in the order the frames left the pending ring:
	 * a drain (the other pump, when pipelined) that finds the ring empty
	 * hands out its LAST buffer after this one.
	 */
	v4l2_m2m_buf_done(buf, ret ? VB2_BUF_STATE_ERROR : VB2_BUF_STATE_DONE);
	daedalus_cap_release(ctx);
	mutex_unlock(&ctx->lock);
	if (last)
		daedalus_queue_event(ctx, V4L2_EVENT_EOS);
	return true;

idle:
	mutex_unlock(&ctx->lock);
	return false;
}

/**
 * daedalus_m2m_feed_send() - send one FEED and take in its answer
 * @ctx: the file.
 * @msg: the FEED (flags among FLUSH, RESET, RESYNC, and DMABUF with
 *	@attach), followed by its inline bitstream.
 * @len: bytes of @msg.
 * @attach: the job's buffers (the OUTPUT buffer holding the bitstream) for
 *	DAEDALUS_DECODE_DMABUF, or NULL.
 *
 * Queues the frames the answer lists. An answer that does not arrive may
 * still have been decoded: the daemon then keeps frames the kernel does not
 * know of, and the FEEDs that follow carry DAEDALUS_DECODE_RESYNC until one
 * is answered with all of them. A stream the daemon refuses (EOPNOTSUPP: no
 * exact CAPTURE layout for it) becomes fatal.
 *
 * Context: the pump (a transport's feed), without ctx->lock, which it takes.
 * Return: 0, -EILSEQ when the daemon could not decode the bytes, or an
 * error of daedalus_decode_op().
 */
int daedalus_m2m_feed_send(struct daedalus_m2m_ctx *ctx,
			   struct daedalus_decode_req *msg, size_t len,
			   const struct daedalus_attach *attach)
{
	u32 flags = msg->flags;
	unsigned int i;
	int ret;

	ret = daedalus_decode_op(daedalus_m2m_dev(ctx), &ctx->out_caller,
				 &ctx->stream, DAEDALUS_MSG_FEED,
				 DAEDALUS_DECODE_FLUSH | DAEDALUS_DECODE_RESET |
				 DAEDALUS_DECODE_RESYNC |
				 (attach ? DAEDALUS_DECODE_DMABUF : 0),
				 msg, len, attach, &ctx->result);
	mutex_lock(&ctx->lock);
	if (ret) {
		if (ret != -ECANCELED && ret != -EINVAL)
			ctx->resync = true;
		goto out;
	}
	/*
	 * Refused meanwhile (pipelined: by the deliver step, from an earlier
	 * frame): the frames of this answer are dropped with the stream, and
	 * its buffer stays with the driver, as every buffer queued after the
	 * refusal does (daedalus_m2m_fatal()).
	 */
	if (ctx->fatal) {
		ret = -ECANCELED;
		goto out;
	}
	for (i = 0; i < ctx->result.resp.nr_frames; i++)
		daedalus_pending_push(ctx, &ctx->result.frames[i]);
	ret = ctx->result.resp.status == DAEDALUS_DECODE_OK ? 0 : -EILSEQ;
	/* More kept frames than one answer lists: ask again. */
	if (flags & DAEDALUS_DECODE_RESYNC)
		ctx->resync = ret ||
			ctx->result.resp.nr_frames == DAEDALUS_MAX_FRAMES;
	if (ret && ctx->result.resp.error == EOPNOTSUPP)
		daedalus_m2m_fatal(ctx, ctx->result.msg);
out:
	mutex_unlock(&ctx->lock);
	return ret;
}

/*
 * The inline transport's FEED: the bitstream is copied into the message,
 * which caps it at DAEDALUS_FEED_MAX bytes.
 */
static int daedalus_feed_inline(struct daedalus_m2m_ctx *ctx,
				struct vb2_v4l2_buffer *src, u32 codec,
				u32 flags)
{
	struct daedalus_decode_req *msg;
	u32 bytes = 0, offset = 0;
	u8 *vaddr = NULL;
	int ret;

	if (src) {
		bytes = vb2_get_plane_payload(&src->vb2_buf, 0);
		offset = min(src->vb2_buf.planes[0].data_offset, bytes);
		bytes -= offset;
		vaddr = vb2_plane_vaddr(&src->vb2_buf, 0);
		if (!vaddr)
			return -EFAULT;
	}
	if (bytes > DAEDALUS_FEED_MAX)
		return -E2BIG;
	msg = kvzalloc(sizeof(*msg) + bytes, GFP_KERNEL_ACCOUNT);
	if (!msg)
		return -ENOMEM;
	msg->codec = codec;
	msg->bitstream_len = bytes;
	if (src) {
		msg->timestamp = src->vb2_buf.timestamp;
		memcpy(msg + 1, vaddr + offset, bytes);
	} else {
		msg->flags |= DAEDALUS_DECODE_FLUSH;
	}
	msg->flags |= flags;
	ret = daedalus_m2m_feed_send(ctx, msg, sizeof(*msg) + bytes, NULL);
	kvfree(msg);
	return ret;
}

/*
 * Sends one FEED (bytes of @src, or an empty FLUSH when @src is NULL) with
 * @flags (daedalus_feed_flags()) through the transport, which queues the
 * frames it completed (daedalus_m2m_feed_send()). Runs in the pump without
 * ctx->lock; the caller made sure of daedalus_feed_room().
 */
static int daedalus_feed(struct daedalus_m2m_ctx *ctx,
			 struct vb2_v4l2_buffer *src, u32 flags)
{
	u32 codec = daedalus_m2m_out_codec(ctx);

	if (!codec)
		return -EINVAL;
	return daedalus_transport(ctx)->feed(ctx, src, codec, flags);
}

/**
 * daedalus_m2m_out_codec() - the daemon's codec for OUTPUT's coded format
 * @ctx: the file.
 *
 * Return: its enum daedalus_codec, or 0 for a format the node lacks.
 */
u32 daedalus_m2m_out_codec(struct daedalus_m2m_ctx *ctx)
{
	const struct daedalus_coded_fmt *fmt =
		daedalus_find_coded_fmt(daedalus_m2m_dev(ctx),
					ctx->base.out_fmt.pixelformat);

	return fmt ? fmt->codec : 0;
}

/* The pump may talk to the daemon at all; ctx->lock held. */
static bool daedalus_pump_may_run(struct daedalus_m2m_ctx *ctx)
{
	return !ctx->closing && !ctx->out_stopping && !ctx->fatal;
}

/*
 * A FEED may be sent: room in the pending ring for its answer; after a lost
 * answer, an empty ring (the RESYNC answer lists every frame the daemon
 * keeps). ctx->lock held.
 */
static bool daedalus_feed_room(struct daedalus_m2m_ctx *ctx)
{
	return ctx->resync ? !ctx->nr_pending : daedalus_pending_room(ctx);
}

/* The DAEDALUS_DECODE_* flags of the next FEED; ctx->lock held. */
static u32 daedalus_feed_flags(struct daedalus_m2m_ctx *ctx)
{
	u32 flags = 0;

	if (ctx->reset) {
		/* A seek: the daemon drops everything it keeps. */
		flags |= DAEDALUS_DECODE_RESET;
		ctx->reset = false;
		ctx->resync = false;
	}
	if (ctx->resync)
		flags |= DAEDALUS_DECODE_RESYNC;
	return flags;
}

/* Step 2: an OUTPUT buffer to the daemon. */
static bool daedalus_feed_one(struct daedalus_m2m_ctx *ctx)
{
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);
	struct vb2_v4l2_buffer *src;
	u32 flags;
	int ret;

	mutex_lock(&ctx->lock);
	if (!daedalus_pump_may_run(ctx) || ctx->stopped ||
	    !vb2_is_streaming(v4l2_m2m_get_src_vq(m2m)) ||
	    !v4l2_m2m_num_src_bufs_ready(m2m) || !daedalus_feed_room(ctx)) {
		mutex_unlock(&ctx->lock);
		return false;
	}
	src = v4l2_m2m_src_buf_remove(m2m);
	flags = daedalus_feed_flags(ctx);
	mutex_unlock(&ctx->lock);

	ret = daedalus_feed(ctx, src, flags);
	if (ret == -ECANCELED) {
		/*
		 * OUTPUT is stopping (it returns the buffer with the rest of its
		 * queue) or the stream was refused meanwhile (it keeps it).
		 */
		mutex_lock(&ctx->lock);
		v4l2_m2m_buf_queue(m2m, src);
		mutex_unlock(&ctx->lock);
		return true;
	}
	if (ret && ret != -EILSEQ)
		dev_warn_ratelimited(&daedalus_m2m_dev(ctx)->pdev->dev,
				     "stream %llu: OUTPUT buffer %u not decoded: %d\n",
				     ctx->stream.id, src->vb2_buf.index, ret);
	v4l2_m2m_buf_done(src, ret ? VB2_BUF_STATE_ERROR : VB2_BUF_STATE_DONE);
	return true;
}

/*
 * Step 3: the drain after DECODER_CMD STOP, once OUTPUT is consumed. The
 * FLUSH waits for room in the pending ring like a FEED does.
 */
static bool daedalus_drain(struct daedalus_m2m_ctx *ctx)
{
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);
	u32 flags;
	int ret;

	mutex_lock(&ctx->lock);
	if (!ctx->draining || !daedalus_pump_may_run(ctx) ||
	    v4l2_m2m_num_src_bufs_ready(m2m))
		goto idle;
	if (!ctx->flushed) {
		if (!daedalus_feed_room(ctx))
			goto idle;
		ctx->flushed = true;
		ctx->flushing = true;
		flags = daedalus_feed_flags(ctx);
		mutex_unlock(&ctx->lock);
		ret = daedalus_feed(ctx, NULL, flags);
		mutex_lock(&ctx->lock);
		ctx->flushing = false;
		/*
		 * Frames of the drain may still be in the daemon: FLUSH again
		 * (with RESYNC) while it lists more, or, a few times, after an
		 * answer that did not come in time.
		 */
		if (ctx->resync &&
		    (!ret || (ret == -ETIMEDOUT &&
			      ctx->flush_retries++ < DAEDALUS_FLUSH_RETRIES)))
			ctx->flushed = false;
		mutex_unlock(&ctx->lock);
		if (ret && ret != -EILSEQ && ret != -ECANCELED)
			dev_warn_ratelimited(&daedalus_m2m_dev(ctx)->pdev->dev,
					     "stream %llu: drain failed: %d\n",
					     ctx->stream.id, ret);
		return true;
	}
	if (ctx->nr_pending || ctx->src_change)
		goto idle;
	if (!vb2_is_streaming(v4l2_m2m_get_dst_vq(m2m))) {
		/*
		 * Nothing decoded is left and CAPTURE is not set up (no frame
		 * came, so no SOURCE_CHANGE told the client to set it up): the
		 * drain ends now with the event; the first CAPTURE buffer
		 * queued later carries LAST.
		 */
		ctx->last_owed = true;
	} else if (daedalus_cap_ready(ctx)) {
		daedalus_cap_last(ctx, v4l2_m2m_dst_buf_remove(m2m));
	} else {
		goto idle;
	}
	ctx->draining = false;
	ctx->stopped = true;
	mutex_unlock(&ctx->lock);
	daedalus_queue_event(ctx, V4L2_EVENT_EOS);
	return true;

idle:
	mutex_unlock(&ctx->lock);
	return false;
}

/* Step 0: the LAST buffer of a drain that ended before CAPTURE streamed. */
static bool daedalus_pay_last(struct daedalus_m2m_ctx *ctx)
{
	bool paid = false;

	mutex_lock(&ctx->lock);
	if (ctx->last_owed && daedalus_cap_ready(ctx)) {
		ctx->last_owed = false;
		daedalus_cap_last(ctx,
				  v4l2_m2m_dst_buf_remove(daedalus_m2m_ctx(ctx)));
		paid = true;
	}
	mutex_unlock(&ctx->lock);
	return paid;
}

/*
 * Each step takes ctx->lock for its decisions only, never for a round trip.
 * One pump runs all four steps; a pipelined device (daedalus_m2m.pipelined)
 * leaves feed and drain to daedalus_m2m_feed_pump(), so a FEED and a FETCH
 * of the file are in flight at once. Each pump wakes the other after a step:
 * a FEED answer gives the deliver step frames, a delivered frame gives the
 * FEED step room in the pending ring.
 */
static void daedalus_m2m_pump(struct work_struct *work)
{
	struct daedalus_m2m_ctx *ctx =
		container_of(work, struct daedalus_m2m_ctx, work);

	if (daedalus_pipelined(ctx)) {
		while (daedalus_pay_last(ctx) || daedalus_deliver(ctx))
			queue_work(system_unbound_wq, &ctx->feed_work);
		return;
	}
	while (daedalus_pay_last(ctx) || daedalus_deliver(ctx) ||
	       daedalus_feed_one(ctx) || daedalus_drain(ctx))
		;
}

/* The OUTPUT half of a pipelined device's pump (see daedalus_m2m_pump()). */
static void daedalus_m2m_feed_pump(struct work_struct *work)
{
	struct daedalus_m2m_ctx *ctx =
		container_of(work, struct daedalus_m2m_ctx, feed_work);

	while (daedalus_feed_one(ctx) || daedalus_drain(ctx))
		queue_work(system_unbound_wq, &ctx->work);
}

/* vb2 queue operations; called with ctx->q_lock held. */

static int daedalus_queue_setup(struct vb2_queue *vq, unsigned int *nbuffers,
				unsigned int *nplanes, unsigned int sizes[],
				struct device *alloc_devs[])
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vq);
	u32 size;

	mutex_lock(&ctx->lock);
	size = V4L2_TYPE_IS_OUTPUT(vq->type) ?
		ctx->base.out_fmt.plane_fmt[0].sizeimage :
		ctx->base.cap_fmt.plane_fmt[0].sizeimage;
	mutex_unlock(&ctx->lock);

	if (*nplanes)
		return *nplanes == 1 && sizes[0] >= size ? 0 : -EINVAL;
	*nplanes = 1;
	sizes[0] = size;
	return 0;
}

/* MMAP buffer memory is charged to the device's budget (max_buffer_mib). */
static int daedalus_buf_init(struct vb2_buffer *vb)
{
	long size = vb2_plane_size(vb, 0);
	long limit = (long)max_buffer_mib << 20;

	if (vb->memory != VB2_MEMORY_MMAP)
		return 0;
	if (atomic_long_add_return(size, &daedalus_m2m_buffer_bytes) > limit) {
		atomic_long_sub(size, &daedalus_m2m_buffer_bytes);
		return -ENOMEM;
	}
	return 0;
}

static void daedalus_buf_cleanup(struct vb2_buffer *vb)
{
	if (vb->memory == VB2_MEMORY_MMAP)
		atomic_long_sub(vb2_plane_size(vb, 0),
				&daedalus_m2m_buffer_bytes);
}

static int daedalus_buf_prepare(struct vb2_buffer *vb)
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);
	unsigned int need;
	int ret = 0;

	if (V4L2_TYPE_IS_OUTPUT(vb->vb2_queue->type))
		return 0;
	mutex_lock(&ctx->lock);
	need = ctx->base.cap_fmt.plane_fmt[0].sizeimage;
	/*
	 * A resolution change: between its event and the application's new
	 * CAPTURE set-up, the application may still queue back a buffer of
	 * the old format that it dequeued before it saw the event (it cannot
	 * look at events and DQBUF/QBUF at once; dev-decoder.rst has it drain
	 * until LAST). That buffer is kept and never written: delivery waits
	 * for the new set-up, whose STREAMOFF hands it back.
	 */
	if (ctx->src_change && vb2_is_streaming(vb->vb2_queue))
		need = min(need, ctx->drain_sizeimage);
	if (vb2_plane_size(vb, 0) < need)
		ret = -EINVAL;
	mutex_unlock(&ctx->lock);
	return ret;
}

static int daedalus_buf_out_validate(struct vb2_buffer *vb)
{
	struct vb2_v4l2_buffer *vbuf = to_vb2_v4l2_buffer(vb);

	vbuf->field = V4L2_FIELD_NONE;
	return 0;
}

/*
 * DQBUF (vb2 calls this once the buffer has left the done list), and the
 * buffers a STREAMOFF takes back: a resolution change waiting for the
 * application to dequeue the old geometry's frames may go on.
 */
static void daedalus_buf_finish(struct vb2_buffer *vb)
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	if (!V4L2_TYPE_IS_OUTPUT(vb->vb2_queue->type) &&
	    READ_ONCE(ctx->change_waits))
		daedalus_m2m_kick(ctx);
}

static void daedalus_buf_queue(struct vb2_buffer *vb)
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	v4l2_m2m_buf_queue(daedalus_m2m_ctx(ctx), to_vb2_v4l2_buffer(vb));
	daedalus_m2m_kick(ctx);
}

/* Every queued CAPTURE buffer holds a frame of the current format. */
static bool daedalus_cap_bufs_fit(struct daedalus_m2m_ctx *ctx)
{
	struct v4l2_m2m_buffer *b;

	v4l2_m2m_for_each_dst_buf(daedalus_m2m_ctx(ctx), b)
		if (vb2_plane_size(&b->vb.vb2_buf, 0) <
		    ctx->base.cap_fmt.plane_fmt[0].sizeimage)
			return false;
	return true;
}

static int daedalus_start_streaming(struct vb2_queue *vq, unsigned int count)
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vq);
	struct vb2_v4l2_buffer *vbuf;
	int ret;

	mutex_lock(&ctx->lock);
	if (!V4L2_TYPE_IS_OUTPUT(vq->type)) {
		/*
		 * dev-decoder.rst: after a source change the client must
		 * reallocate CAPTURE buffers that are too small for the new
		 * format; buffers it queued earlier were checked only against
		 * the format of that moment.
		 */
		if (ctx->fatal || !daedalus_cap_bufs_fit(ctx)) {
			ret = ctx->fatal ? -EIO : -EINVAL;
			mutex_unlock(&ctx->lock);
			while ((vbuf = v4l2_m2m_dst_buf_remove(daedalus_m2m_ctx(ctx))))
				v4l2_m2m_buf_done(vbuf, VB2_BUF_STATE_QUEUED);
			return ret;
		}
		ctx->cap_sequence = 0;
		ctx->src_change = false;
	}
	ctx->stopped = false;
	mutex_unlock(&ctx->lock);
	daedalus_m2m_kick(ctx);
	return 0;
}

static void daedalus_stop_streaming(struct vb2_queue *vq)
{
	struct daedalus_m2m_ctx *ctx = vb2_get_drv_priv(vq);
	struct daedalus_dev *dev = daedalus_m2m_dev(ctx);
	struct v4l2_m2m_ctx *m2m = daedalus_m2m_ctx(ctx);
	struct vb2_v4l2_buffer *vbuf;

	if (V4L2_TYPE_IS_OUTPUT(vq->type)) {
		/* A seek: the pump stops, the daemon starts over. */
		mutex_lock(&ctx->lock);
		ctx->out_stopping = true;
		mutex_unlock(&ctx->lock);
		daedalus_bridge_cancel(dev, &ctx->out_caller);
		daedalus_bridge_cancel(dev, &ctx->cap_caller);
		flush_work(&ctx->work);
		flush_work(&ctx->feed_work);
		while ((vbuf = v4l2_m2m_src_buf_remove(m2m)))
			v4l2_m2m_buf_done(vbuf, VB2_BUF_STATE_ERROR);
		mutex_lock(&ctx->lock);
		ctx->reset = true;
		ctx->nr_pending = 0;
		ctx->draining = false;
		ctx->flushed = false;
		ctx->flushing = false;
		ctx->stopped = false;
		ctx->last_owed = false;
		ctx->resync = false;
		ctx->fatal = false;
		ctx->out_stopping = false;
		mutex_unlock(&ctx->lock);
		daedalus_bridge_resume(dev, &ctx->out_caller);
		daedalus_bridge_resume(dev, &ctx->cap_caller);
	} else {
		/* Decoding goes on; only CAPTURE buffers are given back. */
		mutex_lock(&ctx->lock);
		ctx->cap_stopping = true;
		mutex_unlock(&ctx->lock);
		daedalus_bridge_cancel(dev, &ctx->cap_caller);
		wait_event(ctx->pump_wq, !READ_ONCE(ctx->cap_busy));
		while ((vbuf = v4l2_m2m_dst_buf_remove(m2m))) {
			vb2_set_plane_payload(&vbuf->vb2_buf, 0, 0);
			v4l2_m2m_buf_done(vbuf, VB2_BUF_STATE_ERROR);
		}
		mutex_lock(&ctx->lock);
		ctx->cap_stopping = false;
		mutex_unlock(&ctx->lock);
		daedalus_bridge_resume(dev, &ctx->cap_caller);
	}
	daedalus_m2m_kick(ctx);
}

static const struct vb2_ops daedalus_qops = {
	.queue_setup		= daedalus_queue_setup,
	.buf_init		= daedalus_buf_init,
	.buf_cleanup		= daedalus_buf_cleanup,
	.buf_out_validate	= daedalus_buf_out_validate,
	.buf_prepare		= daedalus_buf_prepare,
	.buf_queue		= daedalus_buf_queue,
	.buf_finish		= daedalus_buf_finish,
	.start_streaming	= daedalus_start_streaming,
	.stop_streaming		= daedalus_stop_streaming,
	.wait_prepare		= vb2_ops_wait_prepare,
	.wait_finish		= vb2_ops_wait_finish,
};

/* Both queues: the transport's memory and I/O modes, timestamps copied. */
static int daedalus_queue_init_one(struct daedalus_m2m_ctx *ctx,
				   struct vb2_queue *vq, enum v4l2_buf_type type)
{
	const struct daedalus_m2m_transport *t = daedalus_transport(ctx);

	vq->type = type;
	vq->io_modes = t->io_modes;
	vq->drv_priv = ctx;
	vq->buf_struct_size = sizeof(struct v4l2_m2m_buffer);
	vq->ops = &daedalus_qops;
	vq->mem_ops = t->mem_ops;
	vq->dev = t->alloc_dev;
	vq->timestamp_flags = V4L2_BUF_FLAG_TIMESTAMP_COPY;
	vq->lock = &ctx->q_lock;
	return vb2_queue_init(vq);
}

static int daedalus_queue_init(void *priv, struct vb2_queue *src_vq,
			       struct vb2_queue *dst_vq)
{
	int ret;

	ret = daedalus_queue_init_one(priv, src_vq,
				      V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE);
	if (ret)
		return ret;
	return daedalus_queue_init_one(priv, dst_vq,
				       V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
}

static int daedalus_m2m_open(struct file *file)
{
	struct daedalus_dev *dev = video_drvdata(file);
	const struct daedalus_m2m *m2m = daedalus_dev_m2m(dev);
	struct daedalus_m2m_ctx *ctx;
	int ret;

	if (atomic_inc_return(&daedalus_m2m_nr_ctx) > max_contexts) {
		ret = -EBUSY;
		goto err_count;
	}
	/*
	 * No device lock needed: the context is private to this file until
	 * daedalus_fh_add() links it. Memory is charged to the opener.
	 */
	ctx = kvzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx) {
		ret = -ENOMEM;
		goto err_count;
	}
	ctx->base.dev = dev;
	mutex_init(&ctx->q_lock);
	mutex_init(&ctx->lock);
	init_waitqueue_head(&ctx->pump_wq);
	daedalus_caller_init(&ctx->out_caller, file->f_cred->fsuid);
	daedalus_caller_init(&ctx->cap_caller, file->f_cred->fsuid);
	INIT_WORK(&ctx->work, daedalus_m2m_pump);
	INIT_WORK(&ctx->feed_work, daedalus_m2m_feed_pump);
	daedalus_stream_init(&ctx->stream);
	v4l2_fh_init(&ctx->base.fh, video_devdata(file));
	file->private_data = &ctx->base.fh;
	daedalus_default_fmts(&ctx->base);
	if (daedalus_transport(ctx)->out_sizeimage_max)
		ctx->base.out_fmt.plane_fmt[0].sizeimage =
			min_t(u32, ctx->base.out_fmt.plane_fmt[0].sizeimage,
			      daedalus_transport(ctx)->out_sizeimage_max);

	v4l2_ctrl_handler_init(&ctx->ctrls, 1);
	v4l2_ctrl_new_std(&ctx->ctrls, NULL, V4L2_CID_MIN_BUFFERS_FOR_CAPTURE,
			  1, 32, 1, 4);
	if (m2m->add_ctrls)
		m2m->add_ctrls(dev, &ctx->ctrls);
	ret = ctx->ctrls.error;
	if (ret)
		goto err_free_ctrls;
	ctx->base.fh.ctrl_handler = &ctx->ctrls;

	ctx->base.fh.m2m_ctx = v4l2_m2m_ctx_init(m2m->m2m_dev, ctx,
						 daedalus_queue_init);
	if (IS_ERR(ctx->base.fh.m2m_ctx)) {
		ret = PTR_ERR(ctx->base.fh.m2m_ctx);
		goto err_free_ctrls;
	}
	ctx->base.fh.m2m_ctx->q_lock = &ctx->q_lock;
	daedalus_fh_add(&ctx->base.fh, file);
	return 0;

err_free_ctrls:
	v4l2_ctrl_handler_free(&ctx->ctrls);
	v4l2_fh_exit(&ctx->base.fh);
	mutex_destroy(&ctx->lock);
	mutex_destroy(&ctx->q_lock);
	kvfree(ctx);
err_count:
	atomic_dec(&daedalus_m2m_nr_ctx);
	return ret;
}

/* Never waits for the daemon: requests in flight are cancelled. */
static int daedalus_m2m_release(struct file *file)
{
	struct daedalus_m2m_ctx *ctx = daedalus_file_to_m2m(file);
	struct daedalus_dev *dev = ctx->base.dev;

	mutex_lock(&ctx->lock);
	ctx->closing = true;
	mutex_unlock(&ctx->lock);
	daedalus_bridge_cancel(dev, &ctx->out_caller);
	daedalus_bridge_cancel(dev, &ctx->cap_caller);
	cancel_work_sync(&ctx->work);
	cancel_work_sync(&ctx->feed_work);
	mutex_lock(&ctx->q_lock);
	v4l2_m2m_ctx_release(ctx->base.fh.m2m_ctx);
	mutex_unlock(&ctx->q_lock);
	cancel_work_sync(&ctx->work);
	cancel_work_sync(&ctx->feed_work);
	daedalus_stream_close(dev, &ctx->stream);
	daedalus_fh_del(&ctx->base.fh, file);
	v4l2_fh_exit(&ctx->base.fh);
	v4l2_ctrl_handler_free(&ctx->ctrls);
	mutex_destroy(&ctx->lock);
	mutex_destroy(&ctx->q_lock);
	kvfree(ctx->fetch);
	kvfree(ctx);
	atomic_dec(&daedalus_m2m_nr_ctx);
	return 0;
}

/* v4l2-mem2mem's scheduler is not used: no job is ever ready. */
static int daedalus_job_ready(void *priv)
{
	return 0;
}

static void daedalus_device_run(void *priv)
{
}

static const struct v4l2_m2m_ops daedalus_m2m_ops = {
	.device_run	= daedalus_device_run,
	.job_ready	= daedalus_job_ready,
};

/*
 * This layer's transport: vmalloc buffers whose bytes are copied into FEED
 * messages and out of FETCH answers, so a FEED carries at most
 * DAEDALUS_FEED_MAX bytes and a FETCH at most DAEDALUS_INLINE_MAX.
 */
static const struct daedalus_m2m_transport daedalus_inline_transport = {
	.mem_ops		= &vb2_vmalloc_memops,
	.io_modes		= VB2_MMAP | VB2_DMABUF,
	.frame_max		= DAEDALUS_INLINE_MAX,
	.out_sizeimage_max	= DAEDALUS_FEED_MAX,
	.kernel_map		= true,
	.feed			= daedalus_feed_inline,
	.fetch			= daedalus_fetch_inline,
};

/*
 * Extends the node that phase 8.1 registered: this layer's file operations
 * and ioctl table are copies of the ones registered before it, with what
 * the decoder changes replaced (open and release set up the vb2 queues;
 * queue, format and decoder ioctls, see daedalus-m2m-ioctl.c).
 */
static int daedalus_m2m_init(struct daedalus_dev *dev)
{
	struct daedalus_m2m *m2m;
	void *ioctl_ops;
	int ret;

	m2m = kzalloc(sizeof(*m2m), GFP_KERNEL);
	if (!m2m)
		return -ENOMEM;
	m2m->m2m_dev = v4l2_m2m_init(&daedalus_m2m_ops);
	if (IS_ERR(m2m->m2m_dev)) {
		ret = PTR_ERR(m2m->m2m_dev);
		goto err_free;
	}
	m2m->transport = daedalus_inline_transport;

	m2m->base_fops = dev->fops;
	m2m->fops = *dev->fops;
	m2m->fops.open = daedalus_m2m_open;
	m2m->fops.release = daedalus_m2m_release;
	m2m->fops.poll = daedalus_m2m_poll;
	m2m->fops.mmap = v4l2_m2m_fop_mmap;

	m2m->base_ioctl_ops = dev->ioctl_ops;
	ioctl_ops = kmemdup(dev->ioctl_ops, sizeof(*dev->ioctl_ops), GFP_KERNEL);
	if (!ioctl_ops) {
		ret = -ENOMEM;
		goto err_release_m2m;
	}
	ret = daedalus_m2m_ioctl_ops_init(ioctl_ops, dev->ioctl_ops);
	if (ret)
		goto err_free_ioctl_ops;
	m2m->ioctl_ops = ioctl_ops;

	daedalus_layer_set_priv(dev, &daedalus_m2m_layer, m2m);
	dev->fops = &m2m->fops;
	dev->ioctl_ops = m2m->ioctl_ops;
	return 0;

err_free_ioctl_ops:
	kfree(ioctl_ops);
err_release_m2m:
	v4l2_m2m_release(m2m->m2m_dev);
err_free:
	kfree(m2m);
	return ret;
}

/* Runs once the last file of the node is closed (daedalus_v4l2_release()). */
static void daedalus_m2m_exit(struct daedalus_dev *dev)
{
	struct daedalus_m2m *m2m = daedalus_dev_m2m(dev);

	dev->fops = m2m->base_fops;
	dev->ioctl_ops = m2m->base_ioctl_ops;
	daedalus_layer_set_priv(dev, &daedalus_m2m_layer, NULL);
	kfree(m2m->ioctl_ops);
	v4l2_m2m_release(m2m->m2m_dev);
	kfree(m2m);
}

const struct daedalus_layer daedalus_m2m_layer = {
	.name	= "8.5-m2m",
	.init	= daedalus_m2m_init,
	.exit	= daedalus_m2m_exit,
};
