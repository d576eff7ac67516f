/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: the umbrella header shared by every layer.
 *
 * Reading order: daedalus-core.c (module and layer stack), then
 * daedalus-video.c (the /dev/videoN node of phase 8.1), then
 * daedalus-formats.c (the coded and decoded format tables), then the codec
 * files daedalus-vp9.c, daedalus-h264.c and daedalus-av1.c (each codec's
 * own data, which its table entry points to).
 */
#ifndef _DAEDALUS_H
#define _DAEDALUS_H

#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/videodev2.h>
#include <media/v4l2-device.h>
#include <media/v4l2-fh.h>
#include <media/v4l2-ioctl.h>

#include "compat.h"
#include "daedalus-layer.h"
#include "daedalus_v4l2_proto.h"

#define DAEDALUS_NAME		"daedalus-v4l2"
#define DAEDALUS_DRIVER_NAME	"daedalus_v4l2"

/*
 * Frame size limits advertised through ENUM_FRAMESIZES and TRY_FMT. The
 * largest size, DAEDALUS_MAX_WIDTH x DAEDALUS_MAX_HEIGHT, is the wire
 * header's: the daemon refuses larger frames by the same numbers.
 */
#define DAEDALUS_MIN_WIDTH	16
#define DAEDALUS_MIN_HEIGHT	16
#define DAEDALUS_SIZE_STEP	2

struct v4l2_ctrl_config;

/**
 * struct daedalus_codec_ctrls - a codec's V4L2 controls, as data
 * @cfgs: one configuration per control, for v4l2_ctrl_new_custom(). A
 *	standard control gives its id and only what the V4L2 core does not
 *	fill in itself (a menu's range and default, an array's dimensions).
 * @num: entries in @cfgs (0 where the uAPI the module is built against
 *	has none of the codec's controls, see compat.h).
 *
 * The stateless codec controls of the codec's uAPI (V4L2_CID_STATELESS_*).
 * On this stateful node they do nothing: the daemon parses the bitstream
 * itself, so no control's value ever reaches it or changes a decode. They
 * are offered (by phase 8.6, which registers them on every open file) so
 * that applications probing the node find them, with valid defaults and
 * the V4L2 core's checks of every value set.
 */
struct daedalus_codec_ctrls {
	const struct v4l2_ctrl_config *cfgs;
	unsigned int num;
};

/**
 * struct daedalus_coded_fmt - a codec: a compressed format accepted on OUTPUT
 * @fourcc: V4L2 pixel format.
 * @codec: enum daedalus_codec, how requests to the daemon name it.
 * @name: human-readable codec name; the format's ENUM_FMT description.
 * @min_buffer_size: smallest OUTPUT buffer we hand out, in bytes.
 * @fmt_flags: V4L2_FMT_FLAG_* besides COMPRESSED that describe how the
 *	decoder takes this codec's bytestream (continuous bytestream, dynamic
 *	resolution); reported by the layer that decodes (phase 8.5 on).
 * @frmsize: the coded picture sizes the node takes for this codec
 *	(ENUM_FRAMESIZES; TRY_FMT and S_FMT clamp to them).
 * @ctrls: the codec's controls (its codec file: daedalus-vp9.c, ...), or
 *	NULL for none; registered by phase 8.6 (daedalus-ctrls.c).
 * @opt_in: not offered on the node until a later layer enables it on the
 *	device (daedalus_coded_fmt_enable()): a codec that a later phase
 *	brings, while the earlier phases' node keeps its formats.
 *
 * The one table of codecs in the kernel (daedalus-formats.c): every fact a
 * layer needs about a codec is a member here, and later layers read it
 * through daedalus_find_coded_fmt(), daedalus_coded_fmt_by_index() and
 * daedalus_coded_fmt_by_codec(). A codec's own data lives in its codec file,
 * which exports exactly one symbol, and the entry points to it. There are no
 * per-codec operations: the kernel does nothing codec-specific (the daemon
 * parses and decodes), so adding a codec is an entry here, a codec file for
 * its controls, and a handler in the daemon.
 */
struct daedalus_coded_fmt {
	u32 fourcc;
	u32 codec;
	const char *name;
	u32 min_buffer_size;
	u32 fmt_flags;
	struct v4l2_frmsize_stepwise frmsize;
	const struct daedalus_codec_ctrls *ctrls;
	bool opt_in;
};

/**
 * struct daedalus_decoded_fmt - a raw format produced on CAPTURE
 * @fourcc: V4L2 pixel format.
 * @pixfmt: the daemon's layout of these frames (enum daedalus_pixfmt).
 * @name: the format's name in messages ("NV12").
 * @chroma: its chroma subsampling in messages ("4:2:0").
 * @depth: bits per component.
 * @bpp_num: bytes per sample.
 * @chroma_hdiv: luma samples per chroma sample along a row: 2 (4:2:0,
 *	4:2:2) or 1 (4:4:4). One plane, CbCr interleaved: a chroma row's
 *	stride is 2 / @chroma_hdiv times a luma row's (pixfmt-yuv-planar.rst).
 * @chroma_vdiv: luma rows per chroma row: 2 (4:2:0) or 1 (4:2:2, 4:4:4).
 * @opt_in: not offered on the node until a later layer enables it on the
 *	device (daedalus_decoded_fmt_enable()), as for coded formats.
 */
struct daedalus_decoded_fmt {
	u32 fourcc;
	u32 pixfmt;
	const char *name;
	const char *chroma;
	u8 depth;
	u8 bpp_num;
	u8 chroma_hdiv;
	u8 chroma_vdiv;
	bool opt_in;
};

/**
 * struct daedalus_dev - one daedalus-v4l2 device
 * @v4l2_dev: the V4L2 device; its release callback frees this structure.
 * @vfd: the /dev/videoN node.
 * @pdev: the platform device we are bound to.
 * @vdev_lock: serializes ioctls on @vfd (it is @vfd.lock).
 * @fops: file operations for @vfd, registered by phase 8.1's @init; a later
 *	layer's @init may point it at its own copy that wraps them.
 * @ioctl_ops: ioctl table for @vfd, registered by phase 8.1's @init; a later
 *	layer's @init may point it at its own copy that wraps it.
 * @coded_fmts_enabled: the opt-in coded formats a later layer enabled on
 *	this device, bit i for entry i of the table (daedalus-formats.c).
 *	Written by layers' @init and @exit only (daedalus_coded_fmt_enable()),
 *	read-only while anything is published: no lock. Per device, not
 *	global: after an unbind, the old device's @exit runs when its last
 *	file closes, possibly after a new device was probed and published.
 * @decoded_fmts_enabled: the same for the opt-in decoded formats
 *	(daedalus_decoded_fmt_enable()), with the same rules.
 * @layers_inited: how many layers' @init succeeded (for unwinding).
 * @layers_published: how many layers' @publish succeeded (for unwinding).
 * @layer_priv: one slot per entry of daedalus_layers[], at the same index:
 *	that layer's private state (see daedalus_layer_priv()).
 */
struct daedalus_dev {
	struct v4l2_device v4l2_dev;
	struct video_device vfd;
	struct platform_device *pdev;
	struct mutex vdev_lock; /* serializes ioctls on vfd */
	const struct v4l2_file_operations *fops;
	const struct v4l2_ioctl_ops *ioctl_ops;
	unsigned long coded_fmts_enabled;
	unsigned long decoded_fmts_enabled;
	unsigned int layers_inited;
	unsigned int layers_published;
	void *layer_priv[];
};

/**
 * struct daedalus_ctx - per-open-file state
 * @fh: V4L2 file handle; must stay the first member.
 * @dev: the device this handle belongs to.
 * @out_fmt: coded format on the OUTPUT queue.
 * @cap_fmt: decoded format on the CAPTURE queue.
 * @stream_fourcc: the decoded format the stream needs, once a decoding
 *	layer knows it (phase 8.5: from the first frame's layout), else 0.
 *	While set, CAPTURE offers that format only (ENUM_FMT, TRY_FMT and
 *	S_FMT), as dev-decoder.rst has it after the header is parsed; while 0,
 *	every decoded format the device offers.
 *
 * Formats are changed from ioctls, which @dev->vdev_lock serializes, and
 * by a decoding layer under its own lock, which it also takes around the
 * CAPTURE format ioctls; ENUM_FMT reads @stream_fourcc with READ_ONCE().
 */
struct daedalus_ctx {
	struct v4l2_fh fh;
	struct daedalus_dev *dev;
	struct v4l2_pix_format_mplane out_fmt;
	struct v4l2_pix_format_mplane cap_fmt;
	u32 stream_fourcc;
};

static inline struct daedalus_ctx *daedalus_file_to_ctx(struct file *file)
{
	return container_of(file->private_data, struct daedalus_ctx, fh);
}

/* daedalus-formats.c */
const struct v4l2_frmsize_stepwise *
daedalus_frmsize(const struct daedalus_dev *dev, u32 fourcc);
const struct daedalus_coded_fmt *
daedalus_coded_fmt_by_index(const struct daedalus_dev *dev, unsigned int index);
const struct daedalus_coded_fmt *
daedalus_find_coded_fmt(const struct daedalus_dev *dev, u32 fourcc);
const struct daedalus_coded_fmt *daedalus_coded_fmt_by_codec(u32 codec);
int daedalus_coded_fmt_enable(struct daedalus_dev *dev, u32 codec);
void daedalus_coded_fmt_disable(struct daedalus_dev *dev, u32 codec);
int daedalus_decoded_fmt_enable(struct daedalus_dev *dev, u32 pixfmt);
void daedalus_decoded_fmt_disable(struct daedalus_dev *dev, u32 pixfmt);
const struct daedalus_decoded_fmt *
daedalus_decoded_fmt_by_index(const struct daedalus_ctx *ctx, unsigned int index);
const struct daedalus_decoded_fmt *
daedalus_find_decoded_fmt(const struct daedalus_ctx *ctx, u32 fourcc);
const struct daedalus_decoded_fmt *
daedalus_decoded_fmt_by_pixfmt(const struct daedalus_dev *dev, u32 pixfmt);
const struct daedalus_decoded_fmt *daedalus_decoded_fmt_by_wire(u32 pixfmt);
u32 daedalus_decoded_size(const struct daedalus_decoded_fmt *fmt,
			  u32 bytesperline, u32 height);
void daedalus_fill_coded_fmt(const struct daedalus_dev *dev,
			     struct v4l2_pix_format_mplane *pix);
void daedalus_fill_decoded_fmt(const struct daedalus_ctx *ctx,
			       struct v4l2_pix_format_mplane *pix);
void daedalus_stream_colour(struct v4l2_pix_format_mplane *cap,
			    const struct v4l2_pix_format_mplane *app,
			    const struct daedalus_frame_info *f);
void daedalus_default_fmts(struct daedalus_ctx *ctx);

/* The codec files: each one's controls (struct daedalus_codec_ctrls). */
extern const struct daedalus_codec_ctrls daedalus_vp9_ctrls;
extern const struct daedalus_codec_ctrls daedalus_h264_ctrls;
extern const struct daedalus_codec_ctrls daedalus_av1_ctrls;

#endif /* _DAEDALUS_H */
