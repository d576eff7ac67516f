/* SPDX-License-Identifier: GPL-2.0 */
/*
 * daedalus-v4l2: phase 8.7 layer, the media controller (daedalus-mc.c).
 */
#ifndef _DAEDALUS_MC_H
#define _DAEDALUS_MC_H

#include "daedalus-layer.h"

extern const struct daedalus_layer daedalus_mc_layer;

#endif /* _DAEDALUS_MC_H */
