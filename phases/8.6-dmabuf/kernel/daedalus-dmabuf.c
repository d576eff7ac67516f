// SPDX-License-Identifier: GPL-2.0
/*
 * daedalus-v4l2: phase 8.6 layer, dma-buf zero copy.
 *
 * Up to phase 8.5 the bytes of a buffer cross to the daemon inside the
 * messages (the inline transport): a FEED carries a copy of the bitstream, a
 * FETCH answer the pixels, each at most DAEDALUS_MAX_PAYLOAD, which caps
 * frames near 1 MiB. This layer installs another transport on the m2m layer
 * (struct daedalus_m2m_transport) and serves DAEDALUS_IOC_GET_DMABUF on the
 * bridge's device:
 *
 *  - FEED sends DAEDALUS_DECODE_DMABUF with the bitstream's place in the
 *    OUTPUT buffer (bitstream_offset, bitstream_len) and nothing inline;
 *  - FETCH sends DAEDALUS_FETCH_DMABUF; the daemon writes the pixels into the
 *    CAPTURE buffer and answers without them;
 *  - while such a request is in flight the daemon asks for the job's buffer
 *    with DAEDALUS_IOC_GET_DMABUF and maps it: read-only for OUTPUT,
 *    read-write for CAPTURE (daedalus_dmabuf_get()).
 *
 * So no byte of a frame is copied by the kernel, frames up to
 * DAEDALUS_MAX_WIDTH x DAEDALUS_MAX_HEIGHT decode (the formats phase 8.1
 * offers), and an OUTPUT buffer is as large as phase 8.1 makes it.
 *
 * Memory: videobuf2-dma-sg, MMAP and DMABUF (no USERPTR). Not dma-contig:
 * without CMA (Debian's amd64 kernels have none) and without an IOMMU a
 * contiguous buffer is one page allocation, at most 4 MiB (MAX_ORDER), and a
 * larger one fails with a page allocator WARNING; a 4096x2304 NV12 frame
 * needs 14 MiB. Nothing here needs contiguous memory (no hardware does DMA:
 * the daemon maps the pages), and dma-sg exports and imports dma-bufs as
 * dma-contig does; its export also keeps no lazily built state, so an
 * export for the daemon, made without the queue's lock, cannot race with
 * the application's VIDIOC_EXPBUF of the same buffer (dma-contig builds its
 * buffer's export table on the first export, unlocked).
 *
 * DMA mask: dma-sg maps its buffers (and an imported buffer's exporter maps
 * it) for the platform device, whose mask this layer sets to 64 bits. With
 * 32, pages above 4 GiB would be bounced through swiotlb, and the bounce
 * copy would overwrite on completion what the daemon wrote into the pages
 * themselves. Where every mapping of the device bounces anyway
 * (swiotlb=force, confidential guests) the layer keeps the inline transport.
 *
 * AV1 on the node: this layer also enables the AV1 entry of phase 8.1's
 * format table (opt-in there, daedalus_coded_fmt_enable()), so the node
 * offers 'AV01' from this phase on: one temporal unit per OUTPUT buffer,
 * V4L2_FMT_FLAG_DYN_RESOLUTION and no CONTINUOUS_BYTESTREAM, as the table
 * says. The roadmap puts AV1 on the node here, not with the inline
 * transport of phase 8.5, whose node (and its tests, and a bisect through
 * it) keeps offering exactly VP9 and H.264. The daemon has decoded AV1
 * since phase 8.4, so nothing else changes for it.
 *
 * Stateless controls: this layer's init also installs daedalus_ctrls_add()
 * (daedalus-ctrls.c) as the m2m layer's add_ctrls hook, so every open file
 * gets the VP9, H.264 and AV1 stateless controls of the codec table.
 *
 * Locking: this layer has no lock of its own. daedalus_dmabuf_get() runs
 * under the bridge lock (see daedalus_bridge_get_dmabuf() for why the
 * buffer is valid then); the ioctl makes the file descriptor after the
 * bridge lock is dropped.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/swiotlb.h>
#include <linux/uaccess.h>
#include <media/videobuf2-dma-sg.h>

#include "daedalus.h"
#include "daedalus-bridge.h"
#include "daedalus-ctrls.h"
#include "daedalus-dmabuf.h"
#include "daedalus-m2m.h"

/**
 * struct daedalus_dmabuf_job - the buffer of one FEED's or FETCH's job
 * @attach: how the bridge reaches the buffer (daedalus_dmabuf_get()).
 * @vb: the OUTPUT buffer of a FEED or the CAPTURE buffer of a FETCH; the
 *	pump holds it (taken from its queue, not yet done) for the whole round
 *	trip.
 *
 * Lives in the pump's frame for the duration of the bridge call.
 */
struct daedalus_dmabuf_job {
	struct daedalus_attach attach;
	struct vb2_buffer *vb;
};

/**
 * daedalus_vb_dmabuf() - a vb2 buffer's plane 0 as a new dma-buf reference
 * @vb: a buffer the caller holds (taken from its queue, not yet done).
 * @size: set to the plane's length on success.
 *
 * A buffer the node allocated (MMAP) is exported by vb2's allocator,
 * read-only for OUTPUT and read-write for CAPTURE; an imported one (DMABUF)
 * is the application's own dma-buf, whose access mode its exporter chose.
 * struct vb2_buffer's memory and struct vb2_plane's mem_priv, dbuf and
 * length are the same on every supported kernel. Also used by the stateless
 * node of phase 8.9 for the buffers of a request.
 *
 * Return: the dma-buf (the caller drops it with dma_buf_put()) or an
 * ERR_PTR.
 */
struct dma_buf *daedalus_vb_dmabuf(struct vb2_buffer *vb, u32 *size)
{
	struct vb2_plane *plane = &vb->planes[0];
	const struct vb2_mem_ops *mem_ops = vb->vb2_queue->mem_ops;
	struct dma_buf *dbuf;

	switch (vb->memory) {
	case VB2_MEMORY_MMAP:
		if (!mem_ops->get_dmabuf)
			return ERR_PTR(-EOPNOTSUPP);
		dbuf = mem_ops->get_dmabuf(vb, plane->mem_priv,
					   V4L2_TYPE_IS_OUTPUT(vb->type) ?
					   O_RDONLY : O_RDWR);
		if (IS_ERR(dbuf))
			return dbuf;
		if (!dbuf)
			return ERR_PTR(-ENOMEM);
		break;
	case VB2_MEMORY_DMABUF:
		dbuf = plane->dbuf;
		if (!dbuf)
			return ERR_PTR(-ENOENT);
		get_dma_buf(dbuf);
		break;
	default:
		return ERR_PTR(-EINVAL);
	}
	*size = plane->length;
	return dbuf;
}

/*
 * Buffer 0 of the job (the only one) as a new dma-buf reference; called by
 * the bridge under its lock while the request is in flight.
 */
static struct dma_buf *daedalus_dmabuf_get(const struct daedalus_attach *attach,
					   u32 index, u32 *size)
{
	const struct daedalus_dmabuf_job *job =
		container_of(attach, struct daedalus_dmabuf_job, attach);

	if (index)
		return ERR_PTR(-EINVAL);
	return daedalus_vb_dmabuf(job->vb, size);
}

/*
 * FEED: the bitstream stays in the OUTPUT buffer, at data_offset, and the
 * daemon maps it. A FLUSH or an empty buffer has nothing to map: it goes
 * without DAEDALUS_DECODE_DMABUF, as on the inline transport.
 */
static int daedalus_dmabuf_feed(struct daedalus_m2m_ctx *ctx,
				struct vb2_v4l2_buffer *src, u32 codec,
				u32 flags)
{
	struct daedalus_dmabuf_job job = { .attach.get = daedalus_dmabuf_get };
	struct daedalus_decode_req msg = { .codec = codec, .flags = flags };
	u32 bytes, offset;

	if (!src) {
		msg.flags |= DAEDALUS_DECODE_FLUSH;
		return daedalus_m2m_feed_send(ctx, &msg, sizeof(msg), NULL);
	}
	bytes = vb2_get_plane_payload(&src->vb2_buf, 0);
	offset = min(src->vb2_buf.planes[0].data_offset, bytes);
	msg.timestamp = src->vb2_buf.timestamp;
	msg.bitstream_len = bytes - offset;
	if (!msg.bitstream_len)
		return daedalus_m2m_feed_send(ctx, &msg, sizeof(msg), NULL);
	msg.flags |= DAEDALUS_DECODE_DMABUF;
	msg.bitstream_offset = offset;
	job.vb = &src->vb2_buf;
	return daedalus_m2m_feed_send(ctx, &msg, sizeof(msg), &job.attach);
}

struct daedalus_dmabuf_fetch_reply {
	struct daedalus_reply reply;
	struct daedalus_frame_info want;
	u32 bytes;
};

/*
 * A FETCH answer carries no pixels: exactly a struct daedalus_fetch_resp,
 * naming the frame asked for, whose bytes are those the request's layout
 * holds (none for a DISCARD). A daemon that says it wrote them must have
 * taken the CAPTURE buffer (DAEDALUS_IOC_GET_DMABUF) while the FETCH was in
 * flight: otherwise the buffer would go to the application holding whatever
 * it held before, flagged as a decoded frame.
 */
static bool daedalus_dmabuf_fetch_valid(const struct daedalus_reply *reply,
					u32 status, const void *payload,
					u32 len)
{
	const struct daedalus_dmabuf_fetch_reply *fr =
		container_of(reply, struct daedalus_dmabuf_fetch_reply, reply);
	const struct daedalus_fetch_resp *resp = payload;

	if (status)
		return true;
	if (fr->bytes && !reply->dmabufs)
		return false;
	return len == sizeof(*resp) &&
	       daedalus_m2m_fetch_frame_valid(&fr->want, resp) &&
	       resp->bytes == fr->bytes;
}

/*
 * FETCH: the daemon writes the frame into the CAPTURE buffer itself, laid out
 * as the request says: @dst->sizeimage bytes, which phase 8.1's format table
 * computed for that stride and height in the frame's format
 * (daedalus_decoded_size(): bytesperline * height * 3 / 2 for NV12, * 2
 * for NV16, * 3 for NV24); without a buffer the frame is discarded. The
 * pump checked that the buffer holds that many bytes.
 */
static int daedalus_dmabuf_fetch(struct daedalus_m2m_ctx *ctx,
				 const struct daedalus_frame_info *want,
				 const struct daedalus_fetch_dst *dst)
{
	struct daedalus_dmabuf_job job = { .attach.get = daedalus_dmabuf_get };
	const struct daedalus_attach *attach = NULL;
	struct daedalus_fetch_resp resp;
	struct daedalus_dmabuf_fetch_reply fr = {
		.reply.buf	= &resp,
		.reply.max_len	= sizeof(resp),
		.reply.validate	= daedalus_dmabuf_fetch_valid,
		.want		= *want,
	};
	struct daedalus_fetch_req req = {
		.stream_id	= ctx->stream.id,
		.timestamp	= want->timestamp,
		.digest		= want->digest,
		.flags		= DAEDALUS_FETCH_DISCARD,
		.bytesperline	= dst->bytesperline,
		.height		= dst->height,
		.max_bytes	= dst->sizeimage,
	};
	int ret;

	if (dst->buf) {
		req.flags = DAEDALUS_FETCH_DMABUF;
		fr.bytes = dst->sizeimage;
		job.vb = &dst->buf->vb2_buf;
		attach = &job.attach;
	}
	ret = daedalus_bridge_call_attached(ctx->base.dev, &ctx->cap_caller,
					    DAEDALUS_MSG_FETCH, &req,
					    sizeof(req), attach, &fr.reply);
	if (ret)
		return ret;
	return fr.reply.status ? -EIO : 0;
}

/*
 * The dma-buf transport. No frame or OUTPUT size limit of its own: the
 * formats' (phase 8.1: DAEDALUS_MAX_WIDTH x DAEDALUS_MAX_HEIGHT frames,
 * OUTPUT buffers up to 32 MiB) and the node's buffer budget apply.
 * alloc_dev is the platform device, set by daedalus_dmabuf_init().
 */
static const struct daedalus_m2m_transport daedalus_dmabuf_transport = {
	.mem_ops	= &vb2_dma_sg_memops,
	.io_modes	= VB2_MMAP | VB2_DMABUF,
	.feed		= daedalus_dmabuf_feed,
	.fetch		= daedalus_dmabuf_fetch,
};

/*
 * DAEDALUS_IOC_IN_FLIGHT: 0 while request *@arg still waits for the daemon's
 * answer, -ENOENT otherwise (see daedalus_v4l2_proto.h).
 */
static long daedalus_dmabuf_in_flight(struct daedalus_dev *dev,
				      unsigned long arg)
{
	u64 cookie;

	if (copy_from_user(&cookie, (void __user *)arg, sizeof(cookie)))
		return -EFAULT;
	return daedalus_bridge_in_flight(dev, cookie) ? 0 : -ENOENT;
}

/*
 * DAEDALUS_IOC_GET_DMABUF on /dev/daedalus-v4l2 (the daemon's file): a new
 * file descriptor for buffer @index of the job of in-flight request
 * @cookie. The descriptor is installed only once the answer reached the
 * daemon, so a failed copy leaves nothing behind. DAEDALUS_IOC_IN_FLIGHT
 * is served here too.
 */
static long daedalus_dmabuf_ioctl(struct daedalus_dev *dev, unsigned int cmd,
				  unsigned long arg)
{
	struct daedalus_dmabuf_req __user *uarg = (void __user *)arg;
	struct daedalus_dmabuf_req req;
	struct dma_buf *dbuf;
	u32 size = 0;
	int fd, ret;

	if (cmd == DAEDALUS_IOC_IN_FLIGHT)
		return daedalus_dmabuf_in_flight(dev, arg);
	if (cmd != DAEDALUS_IOC_GET_DMABUF)
		return -ENOTTY;
	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.flags || req.reserved[0] || req.reserved[1])
		return -EINVAL;

	dbuf = daedalus_bridge_get_dmabuf(dev, req.cookie, req.index, &size);
	if (IS_ERR(dbuf))
		return PTR_ERR(dbuf);

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		ret = fd;
		goto err_put_dbuf;
	}
	req.fd = fd;
	req.size = size;
	if (copy_to_user(uarg, &req, sizeof(req))) {
		ret = -EFAULT;
		goto err_put_fd;
	}
	fd_install(fd, dbuf->file); /* takes over our reference */
	return 0;

err_put_fd:
	put_unused_fd(fd);
err_put_dbuf:
	dma_buf_put(dbuf);
	return ret;
}

/*
 * After phase 8.5's init (its transport is in place) and before anything is
 * published: AV1 is offered, open files get the stateless controls, the
 * dma-buf transport replaces the inline one, and the bridge gets its ioctl.
 */
static int daedalus_dmabuf_init(struct daedalus_dev *dev)
{
	struct daedalus_m2m *m2m = daedalus_dev_m2m(dev);
	struct device *dma_dev = &dev->pdev->dev;
	int ret;

	if (!m2m || !daedalus_dev_bridge(dev))
		return -ENODEV;
	ret = dma_set_mask_and_coherent(dma_dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	/* Before publish, so no ioctl sees it change (see the hook). */
	ret = daedalus_coded_fmt_enable(dev, DAEDALUS_CODEC_AV1);
	if (ret)
		return ret;
	m2m->add_ctrls = daedalus_ctrls_add;
	daedalus_bridge_set_ioctl(dev, daedalus_dmabuf_ioctl);
	if (is_swiotlb_force_bounce(dma_dev)) {
		dev_warn(dma_dev,
			 "DMA mappings of this device are bounced (swiotlb): the daemon could not write the buffers themselves; frames keep crossing inline\n");
		return 0;
	}
	m2m->transport = daedalus_dmabuf_transport;
	m2m->transport.alloc_dev = dma_dev;
	return 0;
}

/*
 * Runs after every unpublish, once the last file is closed: no ioctl or
 * open can come any more, so AV1 and the controls can go without a lock.
 */
static void daedalus_dmabuf_exit(struct daedalus_dev *dev)
{
	daedalus_bridge_set_ioctl(dev, NULL);
	daedalus_dev_m2m(dev)->add_ctrls = NULL;
	daedalus_coded_fmt_disable(dev, DAEDALUS_CODEC_AV1);
}

const struct daedalus_layer daedalus_dmabuf_layer = {
	.name	= "8.6-dmabuf",
	.init	= daedalus_dmabuf_init,
	.exit	= daedalus_dmabuf_exit,
};

DAEDALUS_IMPORT_NS_DMA_BUF();
