/*
 * wq.h - a fixed pool of worker threads running queued jobs in FIFO order.
 *
 * Threads are started by wq_new (so call it after fork, e.g. in FUSE init).
 *
 * Threads: every function is thread-safe; a job may push more jobs.  A job
 * must not call wq_drain or wq_free on its own queue (it would wait for
 * itself).  Workers run with all signals blocked.
 */
#ifndef CDNFS_WQ_H
#define CDNFS_WQ_H

#include "compat.h"

struct wq;

typedef void (*wq_fn)(void *arg);

/* Start nthreads (>= 1) workers; name is used for thread names (<= 15 chars). */
int wq_new(struct wq **out, int nthreads, const char *name) WUR;
/* Queue fn(arg).  0, -ENOMEM, or -ESHUTDOWN after wq_free started. */
int wq_push(struct wq *q, wq_fn fn, void *arg) WUR;
/* Block until the queue is empty and no job is running. */
void wq_drain(struct wq *q);
/* Number of jobs queued or running. */
int wq_pending(struct wq *q);
/* Finish every queued job, stop and join the workers, free.  NULL is fine.
 * From the moment it starts, wq_push fails with -ESHUTDOWN, from jobs too:
 * a job that chains work must handle that (e.g. release its argument). */
void wq_free(struct wq *q);

#endif
