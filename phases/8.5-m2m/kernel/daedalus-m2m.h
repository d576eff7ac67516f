/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the stateful m2m decoder (phase 8.5).
 *
 * Reading order: daedalus-m2m.c, daedalus_m2m_pump() first (how buffers move
 * between the application and the daemon), then the vb2 queue operations;
 * daedalus-m2m-ioctl.c holds the ioctl table, DECODER_CMD and the events.
 */
#ifndef _DAEDALUS_M2M_H
#define _DAEDALUS_M2M_H

#include <linux/mutex.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <media/v4l2-ctrls.h>
#include <media/v4l2-mem2mem.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus-decode.h"

/*
 * Largest OUTPUT buffer: it crosses to the daemon inside one FEED message, so
 * a larger one could never be sent and the OUTPUT format does not offer it.
 */
#define DAEDALUS_FEED_MAX	(DAEDALUS_MAX_PAYLOAD - \
				 sizeof(struct daedalus_decode_req))

/* Decoded frames the kernel tracks in the daemon per stream. */
#define DAEDALUS_M2M_MAX_PENDING	32

struct daedalus_m2m_ctx;

/**
 * struct daedalus_fetch_dst - where a FETCH puts a frame
 * @buf: the CAPTURE buffer the pump took; NULL: the frame is dropped
 *	(DAEDALUS_FETCH_DISCARD).
 * @bytesperline: the CAPTURE format's, when the pump took the buffer.
 * @height: the CAPTURE format's height.
 * @sizeimage: the CAPTURE format's sizeimage; the buffer holds at least
 *	that many bytes (checked by the pump).
 */
struct daedalus_fetch_dst {
	struct vb2_v4l2_buffer *buf;
	u32 bytesperline;
	u32 height;
	u32 sizeimage;
};

/**
 * struct daedalus_m2m_transport - how buffers' bytes cross to the daemon
 * @mem_ops: vb2 memory operations of both queues.
 * @io_modes: vb2 I/O modes of both queues (VB2_MMAP, VB2_DMABUF, ...).
 * @alloc_dev: the device vb2 allocates and maps buffers for (vb2_queue.dev);
 *	NULL when @mem_ops need none.
 * @frame_max: the largest CAPTURE sizeimage the transport carries, or 0 for
 *	no limit of its own; a stream whose frames are larger is refused
 *	(daedalus_m2m_ctx.failed).
 * @out_sizeimage_max: the largest OUTPUT sizeimage the node offers (a clamp
 *	on phase 8.1's), or 0 for phase 8.1's own.
 * @kernel_map: @feed and @fetch copy bytes through the kernel's mapping of
 *	a buffer (vb2_plane_vaddr()): a buffer without one does not fit.
 * @feed: sends @src's bytes (NULL: an empty FLUSH) to the daemon as one FEED
 *	of @codec with the DAEDALUS_DECODE_* @flags (RESET, RESYNC), through
 *	daedalus_m2m_feed_send(), and returns what it returned; an error
 *	before anything was sent (the buffer cannot be carried) is returned
 *	as it is, and the pump does not look for a lost answer.
 * @fetch: FETCHes frame @want into @dst (daedalus_fetch_dst) and returns 0
 *	once the buffer holds the frame (or, without a buffer, the daemon
 *	dropped it), or an error (-ECANCELED: the queue is stopping).
 *
 * Phase 8.5's is the inline transport: vmalloc buffers, the bitstream and
 * the pixels copied inside the messages, each at most DAEDALUS_MAX_PAYLOAD.
 * A later layer's init may replace it (daedalus_m2m.transport); @feed and
 * @fetch run in the pump, without any of the file's locks.
 */
struct daedalus_m2m_transport {
	const struct vb2_mem_ops *mem_ops;
	unsigned int io_modes;
	struct device *alloc_dev;
	u32 frame_max;
	u32 out_sizeimage_max;
	bool kernel_map;
	int (*feed)(struct daedalus_m2m_ctx *ctx, struct vb2_v4l2_buffer *src,
		    u32 codec, u32 flags);
	int (*fetch)(struct daedalus_m2m_ctx *ctx,
		     const struct daedalus_frame_info *want,
		     const struct daedalus_fetch_dst *dst);
};

/**
 * struct daedalus_m2m - this layer's state of the device (its layer slot)
 * @m2m_dev: the mem2mem device.
 * @base_fops: the file operations registered before this layer (phase
 *	8.1's).
 * @base_ioctl_ops: the ioctl table registered before this layer (phase
 *	8.1's); the handlers of @ioctl_ops that wrap an earlier one call it.
 * @ioctl_ops: a copy of @base_ioctl_ops (allocated by init, freed by exit)
 *	with what this layer changes replaced or wrapped
 *	(daedalus_m2m_ioctl_ops_init()); registered on the node.
 * @fops: @base_fops with open, release, poll and mmap replaced;
 *	registered on the node.
 * @transport: how buffers' bytes cross to the daemon; the inline transport
 *	unless a later layer's init replaced it.
 * @add_ctrls: adds a later layer's controls to the control handler of a
 *	file being opened, after this layer's own; NULL (this layer's own
 *	only) unless a later layer's init set it. Errors are recorded in the
 *	handler (v4l2_ctrl_handler.error), as v4l2_ctrl_new_*() record them.
 *	Called from open(), in process context, before the file is usable.
 * @pipelined: each file runs two pumps (daedalus_m2m_pump() for CAPTURE,
 *	daedalus_m2m_feed_pump() for OUTPUT), so the next FEED is decoding
 *	while a FETCH lays a frame out: one request of each kind per file in
 *	flight. False (one pump, one request at a time) unless a later
 *	layer's init set it.
 *
 * Written by the init of this layer and of later layers only, and read-only
 * afterwards (the node is published after every init): no lock.
 */
struct daedalus_m2m {
	struct v4l2_m2m_dev *m2m_dev;
	const struct v4l2_file_operations *base_fops;
	const struct v4l2_ioctl_ops *base_ioctl_ops;
	const struct v4l2_ioctl_ops *ioctl_ops;
	struct v4l2_file_operations fops;
	struct daedalus_m2m_transport transport;
	void (*add_ctrls)(struct daedalus_dev *dev,
			  struct v4l2_ctrl_handler *hdl);
	bool pipelined;
};

/**
 * struct daedalus_m2m_ctx - one open file of the decoder
 * @base: formats and the V4L2 file handle; must stay first.
 * @ctrls: control handler (V4L2_CID_MIN_BUFFERS_FOR_CAPTURE, and what a
 *	later layer adds through daedalus_m2m.add_ctrls).
 * @work: runs daedalus_m2m_pump(); one instance at a time (a work item
 *	never runs concurrently with itself).
 * @feed_work: runs daedalus_m2m_feed_pump() when the device is pipelined
 *	(daedalus_m2m.pipelined); never queued otherwise.
 * @q_lock: the lock of both vb2 queues (and of v4l2-mem2mem's queue
 *	ioctls) of this file only.
 * @out_caller: the bridge's view of this file for FEED (cancelled when
 *	OUTPUT stops or the file closes).
 * @cap_caller: the bridge's view of this file for FETCH (cancelled when
 *	CAPTURE stops or the file closes).
 * @pump_wq: woken when the pump lets go of a CAPTURE buffer.
 * @lock: protects every member from here to @cap_sequence, and
 *	@base.cap_fmt (the pump rewrites it when the stream's size changes);
 *	S_FMT(OUTPUT) holds it while it changes @base.out_fmt, whose
 *	colorimetry the pump reads. Never held across a daemon round trip, so
 *	no ioctl waits for the daemon.
 * @pending: frames decoded by the daemon and not yet fetched, oldest first.
 * @pending_head: index of the oldest entry of @pending.
 * @nr_pending: entries in @pending.
 * @have_geometry: the stream's picture size is known (a frame decoded since
 *	the last S_FMT on OUTPUT).
 * @visible_width: width of the decoded picture (CAPTURE may be wider).
 * @visible_height: height of the decoded picture (CAPTURE may be taller).
 * @src_change: SOURCE_CHANGE was sent; CAPTURE must be set up again before
 *	more frames are delivered.
 * @change_waits: the next frame has another geometry and frames of the
 *	current one wait in the CAPTURE done list: the SOURCE_CHANGE event
 *	waits until the application has dequeued them (daedalus_deliver()).
 *	Written under @lock, read locklessly by daedalus_buf_finish().
 * @drain_sizeimage: with @src_change, the CAPTURE sizeimage before the
 *	change: what a buffer the application queues back before it sets
 *	CAPTURE up again must hold (daedalus_buf_prepare()).
 * @draining: DECODER_CMD STOP received; the drain is in progress.
 * @flushed: the drain's FLUSH was sent to the daemon.
 * @flushing: the drain's FLUSH is in flight: frames it lists may still
 *	come, so the deliver step (the other pump, when pipelined) does not
 *	mark the last pending frame LAST yet.
 * @stopped: the drain completed (LAST delivered) and no START came yet.
 * @last_owed: a drain completed while CAPTURE was not streaming; the first
 *	CAPTURE buffer queued later is returned empty with LAST.
 * @reset: the next FEED starts a new stream position (after a seek).
 * @out_stopping: OUTPUT is stopping (a seek): the pump stays idle.
 * @cap_stopping: CAPTURE is stopping: the pump takes no CAPTURE buffer.
 * @closing: the file is being released: the pump stays idle for good.
 * @cap_busy: the pump holds a CAPTURE buffer (a FETCH is in flight).
 * @failed: the stream exceeds what this transport carries; every buffer
 *	is returned with an error until a new stream starts.
 * @resync: the answer to a FEED was lost (the watchdog fired, or the daemon
 *	went away): the daemon may keep frames the kernel was never told of.
 *	The next FEED waits until @pending is empty and asks the daemon to list
 *	them first (DAEDALUS_DECODE_RESYNC).
 * @flush_retries: FLUSHes of the current drain sent again after a lost
 *	answer.
 * @fatal: the stream cannot be decoded exactly (the daemon refused it, or
 *	it needs a CAPTURE format the node does not offer): both vb2 queues are
 *	in their error state (QBUF, DQBUF, STREAMON get -EIO; poll reports
 *	the file ready) until OUTPUT is stopped (dev-decoder.rst, fatal
 *	decoding errors).
 * @cap_sequence: sequence number of the next CAPTURE buffer.
 * @stream: this file's decoder in the daemon; written by the step that
 *	FEEDs (FETCH reads only its id), by S_FMT(OUTPUT) with both queues
 *	idle (a new stream for another codec), and by release once the pumps
 *	are stopped for good.
 * @fetch: bounce buffer for FETCH answers, allocated at the first FETCH;
 *	used by the deliver step only.
 * @result: the last FEED answer; used by the FEED step only.
 */
struct daedalus_m2m_ctx {
	struct daedalus_ctx base;
	struct v4l2_ctrl_handler ctrls;
	struct work_struct work;
	struct work_struct feed_work;
	struct mutex q_lock; /* the vb2 queues of this file */
	struct daedalus_caller out_caller;
	struct daedalus_caller cap_caller;
	wait_queue_head_t pump_wq;
	struct mutex lock; /* pump state below and base.cap_fmt; never across a round trip */
	struct daedalus_frame_info pending[DAEDALUS_M2M_MAX_PENDING];
	unsigned int pending_head;
	unsigned int nr_pending;
	bool have_geometry;
	u32 visible_width;
	u32 visible_height;
	bool src_change;
	bool change_waits;
	u32 drain_sizeimage;
	bool draining;
	bool flushed;
	bool flushing;
	bool stopped;
	bool last_owed;
	bool reset;
	bool out_stopping;
	bool cap_stopping;
	bool closing;
	bool cap_busy;
	bool failed;
	bool resync;
	unsigned int flush_retries;
	bool fatal;
	u32 cap_sequence;
	struct daedalus_dec_stream stream;
	void *fetch;
	struct daedalus_decode_result result;
};

static inline struct daedalus_m2m_ctx *daedalus_file_to_m2m(struct file *file)
{
	return container_of(daedalus_file_to_ctx(file), struct daedalus_m2m_ctx,
			    base);
}

/* The stream was refused (@fatal); takes ctx->lock. */
static inline bool daedalus_m2m_refused(struct daedalus_m2m_ctx *ctx)
{
	bool fatal;

	mutex_lock(&ctx->lock);
	fatal = ctx->fatal;
	mutex_unlock(&ctx->lock);
	return fatal;
}

/* daedalus-m2m.c */
extern const struct daedalus_layer daedalus_m2m_layer;
void daedalus_m2m_kick(struct daedalus_m2m_ctx *ctx);
u32 daedalus_m2m_out_codec(struct daedalus_m2m_ctx *ctx);
int daedalus_m2m_feed_send(struct daedalus_m2m_ctx *ctx,
			   struct daedalus_decode_req *msg, size_t len,
			   const struct daedalus_attach *attach);
bool daedalus_m2m_fetch_frame_valid(const struct daedalus_frame_info *want,
				    const struct daedalus_fetch_resp *resp);

/* This layer's state of @dev; NULL before its init and after its exit. */
static inline struct daedalus_m2m *daedalus_dev_m2m(struct daedalus_dev *dev)
{
	return daedalus_layer_priv(dev, &daedalus_m2m_layer);
}

/* daedalus-m2m-ioctl.c */
int daedalus_m2m_ioctl_ops_init(struct v4l2_ioctl_ops *ops, const struct v4l2_ioctl_ops *base);

#endif /* _DAEDALUS_M2M_H */
