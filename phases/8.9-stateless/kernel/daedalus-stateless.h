/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the stateless decoder node (phase 8.9).
 *
 * Reading order: daedalus-stateless.c, daedalus_sl_run() first (one media
 * request's job, from its controls to the daemon's answer), then the request
 * validation, the vb2 queue operations and the layer; the ioctl table and
 * the formats are in daedalus-stateless-ioctl.c.
 */
#ifndef _DAEDALUS_STATELESS_H
#define _DAEDALUS_STATELESS_H

#include <linux/mutex.h>
#include <linux/workqueue.h>
#include <media/media-device.h>
#include <media/v4l2-ctrls.h>
#include <media/v4l2-mem2mem.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus-decode.h"

/**
 * struct daedalus_sl_codec - a codec of the stateless node
 * @fourcc: its OUTPUT format (V4L2_PIX_FMT_VP9_FRAME, ...).
 * @codec: enum daedalus_codec; every other fact about the codec (its name,
 *	frame sizes, OUTPUT buffer size and controls) is its row of phase
 *	8.1's codec table (daedalus_coded_fmt_by_codec()).
 * @required: the controls a request must set, or it is refused
 *	(dev-stateless-decoder.rst); 0-terminated.
 * @hold: the OUTPUT queue offers V4L2_BUF_CAP_SUPPORTS_M2M_HOLD_CAPTURE_BUF
 *	(several OUTPUT buffers, one picture).
 * @fmt_ctrl: the control whose value decides the CAPTURE format (the SPS,
 *	the frame header); the client sets it before it sets CAPTURE up
 *	(dev-stateless-decoder.rst).
 * @decoded_fourcc: the CAPTURE format a value of @fmt_ctrl needs (NV12 for
 *	8-bit 4:2:0, P010 for 10-bit 4:2:0), or 0 for one the node cannot
 *	give: CAPTURE then keeps its format and the daemon refuses the
 *	stream's requests. (The control itself cannot refuse it: the V4L2
 *	core's initial AV1 sequence is 4:4:4, and a fresh file's values must
 *	stay writable.)
 */
struct daedalus_sl_codec {
	u32 fourcc;
	u32 codec;
	u32 required[4];
	bool hold;
	u32 fmt_ctrl;
	u32 (*decoded_fourcc)(const void *value);
};

/**
 * struct daedalus_sl - this layer's state of the device (its layer slot)
 * @vfd: the stateless /dev/videoN node; its release does nothing (the
 *	node holds a reference to the V4L2 device until its last file closes,
 *	and this structure is freed by the layer's exit, which runs after).
 * @vdev_lock: serializes the non-queue ioctls of @vfd (it is @vfd.lock).
 * @m2m_dev: the mem2mem device of @vfd: its job scheduler runs one job of
 *	one file at a time.
 * @mdev: the media device of phase 8.7, whose ops this layer set at init.
 *
 * Written by init and exit only, read-only in between: no lock.
 */
struct daedalus_sl {
	struct video_device vfd;
	struct mutex vdev_lock; /* serializes non-queue ioctls of vfd */
	struct v4l2_m2m_dev *m2m_dev;
	struct media_device *mdev;
};

/**
 * struct daedalus_sl_ctx - one open file of the stateless node
 * @base: formats and the V4L2 file handle; must stay first. base.stream_fourcc
 *	is NV12 for the life of the file: CAPTURE offers NV12 only (for now).
 * @hdl: the codecs' controls; a request carries its own values of them.
 * @run_work: runs daedalus_sl_run(), one job; queued by device_run.
 * @q_lock: the lock of both vb2 queues (and of v4l2-mem2mem's queue ioctls)
 *	of this file only.
 * @caller: the bridge's view of this file (cancelled by job_abort).
 * @stream: this file's decoder in the daemon; written by S_FMT(OUTPUT) with
 *	both queues idle, by the job, and by release once no job can run.
 * @codec: the row of the OUTPUT format; changed by S_FMT(OUTPUT) with both
 *	queues idle only, so a job or a request's validation, which exist only
 *	while OUTPUT has buffers, reads it without a lock.
 * @lock: protects @aborting, @reset, @new_frame, @out_sequence and
 *	@cap_sequence. Never held across a daemon round trip.
 * @aborting: job_abort ran (STREAMOFF or close): the job fails at once,
 *	and the bridge fails this file's requests until both stop.
 * @reset: the next job is the first since OUTPUT started streaming.
 * @new_frame: the job's OUTPUT buffer starts a CAPTURE buffer (v4l2-mem2mem's
 *	new_frame, valid in device_run, which copies it here for the job).
 * @out_sequence: sequence number of the next OUTPUT buffer.
 * @cap_sequence: sequence number of the next CAPTURE buffer.
 * @msg: the DECODE_REQUEST being built; used by the job only.
 */
struct daedalus_sl_ctx {
	struct daedalus_ctx base;
	struct v4l2_ctrl_handler hdl;
	struct work_struct run_work;
	struct mutex q_lock; /* the vb2 queues of this file */
	struct daedalus_caller caller;
	struct daedalus_dec_stream stream;
	const struct daedalus_sl_codec *codec;
	struct mutex lock; /* aborting, reset, new_frame, sequence numbers */
	bool aborting;
	bool reset;
	bool new_frame;
	u32 out_sequence;
	u32 cap_sequence;
	void *msg;
};

static inline struct daedalus_sl_ctx *daedalus_file_to_sl(struct file *file)
{
	return container_of(daedalus_file_to_ctx(file), struct daedalus_sl_ctx,
			    base);
}

/* daedalus-stateless.c */
extern const struct daedalus_layer daedalus_stateless_layer;

static inline struct daedalus_sl *daedalus_dev_sl(struct daedalus_dev *dev)
{
	return daedalus_layer_priv(dev, &daedalus_stateless_layer);
}

/* daedalus-stateless-ioctl.c */
extern const struct v4l2_ioctl_ops daedalus_sl_ioctl_ops;
const struct daedalus_sl_codec *daedalus_sl_codec_by_index(unsigned int index);
const struct daedalus_sl_codec *daedalus_sl_find_codec(u32 fourcc);
void daedalus_sl_fill_out_fmt(struct daedalus_dev *dev,
			      struct v4l2_pix_format_mplane *pix);
void daedalus_sl_default_fmts(struct daedalus_sl_ctx *ctx);
void daedalus_sl_set_codec(struct daedalus_sl_ctx *ctx);

#endif /* _DAEDALUS_STATELESS_H */
