/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: phase 8.6's dma-buf export of a vb2 buffer
 * (daedalus-dmabuf.c), for the layers after it.
 */
#ifndef _DAEDALUS_DMABUF_H
#define _DAEDALUS_DMABUF_H

#include <linux/types.h>

struct dma_buf;
struct vb2_buffer;

struct dma_buf *daedalus_vb_dmabuf(struct vb2_buffer *vb, u32 *size);

#endif /* _DAEDALUS_DMABUF_H */
