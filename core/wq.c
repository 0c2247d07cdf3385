/*
 * wq.c - fixed pool of worker threads running queued jobs in FIFO order
 * (see include/wq.h).
 *
 * Owns: the worker threads and a singly linked FIFO of jobs (head..tail).
 * States: running -> closing (wq_free called: wq_push returns -ESHUTDOWN,
 * workers keep taking jobs until the FIFO is empty) -> joined -> freed.
 * Invariants: queued == length of the FIFO; active == jobs being run now;
 * a worker exits only when closing and the FIFO is empty, so every job
 * queued before wq_free started is run exactly once.
 * Locking: q->lock protects head, tail, queued, active and closing.
 * Jobs run without the lock held, so a job may push more jobs.  Workers are
 * started with every signal blocked so signals (SIGINT, SIGTERM for FUSE)
 * go to the program's main thread.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wq.h"

struct wq_job {
	struct wq_job *next;
	wq_fn fn;
	void *arg;
};

struct wq {
	pthread_mutex_t lock;  /* protects the fields down to closing */
	pthread_cond_t work;   /* signalled: a job was queued, or closing */
	pthread_cond_t idle;   /* broadcast: queued == 0 && active == 0 */
	struct wq_job *head;   /* next job to run */
	struct wq_job *tail;   /* last job queued */
	int queued;            /* jobs in the FIFO */
	int active;            /* jobs running now */
	int closing;           /* wq_free started */
	int nthreads;          /* workers started (immutable after wq_new) */
	pthread_t *threads;
	char name[16];         /* thread name prefix */
};

/* Take the next job, waiting for one; NULL when the pool is closing and empty. */
static struct wq_job *wq_take(struct wq *q)
{
	struct wq_job *job;

	pthread_mutex_lock(&q->lock);
	while (!q->head && !q->closing)
		pthread_cond_wait(&q->work, &q->lock);
	job = q->head;
	if (job) {
		q->head = job->next;
		if (!q->head)
			q->tail = NULL;
		q->queued--;
		q->active++;
	}
	pthread_mutex_unlock(&q->lock);
	return job;
}

static void wq_done(struct wq *q)
{
	pthread_mutex_lock(&q->lock);
	q->active--;
	if (q->queued == 0 && q->active == 0)
		pthread_cond_broadcast(&q->idle);
	pthread_mutex_unlock(&q->lock);
}

static void *wq_worker(void *p)
{
	struct wq *q = p;
	struct wq_job *job;

	while ((job = wq_take(q)) != NULL) {
		job->fn(job->arg);
		free(job);
		wq_done(q);
	}
	return NULL;
}

/* "name-N", the name cut so the whole fits the 15 characters Linux allows. */
static void wq_name_thread(struct wq *q, int i)
{
	char suffix[16], name[16];
	int slen = snprintf(suffix, sizeof(suffix), "-%d", i);
	size_t plen = strnlen(q->name, 15 - (size_t)slen);

	memcpy(name, q->name, plen);
	memcpy(name + plen, suffix, (size_t)slen + 1);
	/* Only cosmetic (ps, top, gdb): a failure is not worth reporting. */
	(void)pthread_setname_np(q->threads[i], name);
}

/* Close the pool, wake every worker and join them. */
static void wq_stop(struct wq *q)
{
	pthread_mutex_lock(&q->lock);
	q->closing = 1;
	pthread_cond_broadcast(&q->work);
	pthread_mutex_unlock(&q->lock);
	for (int i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
}

static void wq_destroy(struct wq *q)
{
	pthread_cond_destroy(&q->idle);
	pthread_cond_destroy(&q->work);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
}

/* Start the workers with all signals blocked (they inherit the mask). */
static int wq_start(struct wq *q, int nthreads)
{
	sigset_t all, saved;
	int rc = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	for (; q->nthreads < nthreads; q->nthreads++) {
		rc = -pthread_create(&q->threads[q->nthreads], NULL, wq_worker, q);
		if (rc < 0)
			break;
		wq_name_thread(q, q->nthreads);
	}
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	return rc;
}

int wq_new(struct wq **out, int nthreads, const char *name)
{
	struct wq *q = NULL;
	int rc = -EINVAL;

	*out = NULL;
	if (nthreads < 1)
		goto out;
	rc = -ENOMEM;
	q = calloc(1, sizeof(*q));
	if (!q)
		goto out;
	q->threads = calloc((size_t)nthreads, sizeof(*q->threads));
	if (!q->threads)
		goto out;
	snprintf(q->name, sizeof(q->name), "%s", name ? name : "wq");
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work, NULL);
	pthread_cond_init(&q->idle, NULL);
	rc = wq_start(q, nthreads);
	if (rc < 0) {
		log_error("cannot start worker threads for '%s': %s", q->name, strerror(-rc));
		wq_stop(q);
		wq_destroy(q);
		q = NULL;
		goto out;
	}
	*out = q;
	q = NULL;
out:
	if (q) {
		free(q->threads);
		free(q);
	}
	return rc;
}

int wq_push(struct wq *q, wq_fn fn, void *arg)
{
	struct wq_job *job = malloc(sizeof(*job));
	int rc = 0;

	if (!job)
		return -ENOMEM;
	job->next = NULL;
	job->fn = fn;
	job->arg = arg;
	pthread_mutex_lock(&q->lock);
	if (q->closing) {
		rc = -ESHUTDOWN;
	} else {
		if (q->tail)
			q->tail->next = job;
		else
			q->head = job;
		q->tail = job;
		q->queued++;
		job = NULL;
		pthread_cond_signal(&q->work);
	}
	pthread_mutex_unlock(&q->lock);
	free(job);
	return rc;
}

void wq_drain(struct wq *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->queued > 0 || q->active > 0)
		pthread_cond_wait(&q->idle, &q->lock);
	pthread_mutex_unlock(&q->lock);
}

int wq_pending(struct wq *q)
{
	int n;

	pthread_mutex_lock(&q->lock);
	n = q->queued + q->active;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void wq_free(struct wq *q)
{
	if (!q)
		return;
	wq_stop(q);
	wq_destroy(q);
}
