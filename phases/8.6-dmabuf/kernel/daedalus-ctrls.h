/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: phase 8.6's stateless codec controls (daedalus-ctrls.c).
 */
#ifndef _DAEDALUS_CTRLS_H
#define _DAEDALUS_CTRLS_H

struct daedalus_dev;
struct v4l2_ctrl_handler;

void daedalus_ctrls_add(struct daedalus_dev *dev,
			struct v4l2_ctrl_handler *hdl);

#endif /* _DAEDALUS_CTRLS_H */
