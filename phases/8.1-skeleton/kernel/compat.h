/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: differences between the kernels we support.
 *
 * Supported: Debian 12's 6.1 and 6.12 kernels. Every difference between
 * kernel APIs that the module has to absorb lives in this file.
 */
#ifndef _DAEDALUS_COMPAT_H
#define _DAEDALUS_COMPAT_H

#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/videodev2.h>
#include <media/v4l2-fh.h>

/*
 * struct platform_driver: 6.1 has "int (*remove)" plus "void (*remove_new)";
 * 6.11 made .remove return void and kept .remove_new as an alias in a union
 * until 6.13. .remove_new is the member both supported kernels share; a port
 * to 6.13+ changes this one line.
 */
#define DAEDALUS_PLATFORM_REMOVE(fn)	.remove_new = (fn)

/*
 * The dma-buf API is in the DMA_BUF symbol namespace. MODULE_IMPORT_NS()
 * takes the namespace as an identifier up to 6.12 and as a string from 6.13
 * on; the port is a change here only.
 */
#define DAEDALUS_IMPORT_NS_DMA_BUF()	MODULE_IMPORT_NS(DMA_BUF)

/*
 * v4l2_fh_add()/v4l2_fh_del() take a struct file from 6.18 on; the wrappers
 * already carry it so that the port is a change here only.
 */
static inline void daedalus_fh_add(struct v4l2_fh *fh, struct file *file)
{
	v4l2_fh_add(fh);
}

static inline void daedalus_fh_del(struct v4l2_fh *fh, struct file *file)
{
	v4l2_fh_del(fh);
}

/*
 * AV1 on a stateful decoder needs a stateful AV1 coded format (one temporal
 * unit per buffer). Neither 6.1 nor 6.12 defines one: 6.12 has only the
 * stateless V4L2_PIX_FMT_AV1_FRAME ('AV1F'), which belongs on a request-API
 * node. Where the uAPI lacks V4L2_PIX_FMT_AV1 the node uses 'AV01', the
 * value ChromeOS' V4L2 stack defines for stateful AV1 (not upstream yet).
 * Which phases offer it is the format table's business (daedalus-formats.c).
 */
#ifdef V4L2_PIX_FMT_AV1
#define DAEDALUS_PIX_FMT_AV1	V4L2_PIX_FMT_AV1
#else
#define DAEDALUS_PIX_FMT_AV1	v4l2_fourcc('A', 'V', '0', '1')
#endif

/*
 * The stateless AV1 uAPI (V4L2_CID_STATELESS_AV1_*, struct v4l2_ctrl_av1_*)
 * came with 6.5: 6.12 has it, 6.1 does not. DAEDALUS_IF_AV1_UAPI(...) keeps
 * its arguments where the uAPI has the controls and drops them (unexpanded,
 * so they may name what the uAPI lacks) where it does not: daedalus-av1.c
 * lists its controls inside it, and on 6.1 the node has no AV1 control.
 */
#ifdef V4L2_CID_STATELESS_AV1_SEQUENCE
#define DAEDALUS_IF_AV1_UAPI(...)	__VA_ARGS__
#else
#define DAEDALUS_IF_AV1_UAPI(...)
#endif

#endif /* _DAEDALUS_COMPAT_H */
