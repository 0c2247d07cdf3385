/*
 * test_wq.c - unit tests for core/wq.c: FIFO order, many pushers, drain,
 * jobs pushing jobs, wq_pending, wq_free finishing queued work and refusing
 * new work, thread names and blocked signals.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "wq.h"

static atomic_int counter;

static void inc_job(void *arg)
{
	(void)arg;
	atomic_fetch_add(&counter, 1);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void test_new(void)
{
	struct wq *q = (struct wq *)1;

	is_int(wq_new(&q, 0, "x"), -EINVAL, "zero threads is -EINVAL");
	ok(q == NULL, "*out is NULL on failure");
	wq_free(NULL);
	ok(1, "wq_free(NULL) is harmless");
}

/* FIFO: one worker runs jobs in push order. */
static int order[100], order_n;

static void order_job(void *arg)
{
	order[order_n++] = (int)(intptr_t)arg;
}

static void test_fifo(void)
{
	struct wq *q = NULL;
	int rc = wq_new(&q, 1, "fifo"), bad = 0;

	for (int i = 0; i < 100 && rc == 0; i++)
		rc = wq_push(q, order_job, (void *)(intptr_t)i);
	wq_drain(q);
	for (int i = 0; i < 100; i++)
		bad += order[i] != i;
	ok(rc == 0 && order_n == 100 && bad == 0, "one worker runs 100 jobs in FIFO order");
	wq_free(q);
}

static void *pusher(void *p)
{
	struct wq *q = p;
	intptr_t fails = 0;

	for (int i = 0; i < 250; i++)
		fails += wq_push(q, inc_job, NULL) != 0;
	return (void *)fails;
}

static void test_many_pushers(void)
{
	struct wq *q = NULL;
	pthread_t t[4];
	intptr_t fails = 0;
	void *r;
	int rc = wq_new(&q, 3, "many");

	atomic_store(&counter, 0);
	for (int i = 0; i < 4 && rc == 0; i++)
		rc = -pthread_create(&t[i], NULL, pusher, q);
	is_int(rc, 0, "start 4 pusher threads");
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], &r);
		fails += (intptr_t)r;
	}
	is_int(fails, 0, "1000 pushes from 4 threads succeed");
	wq_drain(q);
	is_int(atomic_load(&counter), 1000, "drain returns after all 1000 jobs ran");
	is_int(wq_pending(q), 0, "nothing pending after drain");
	wq_drain(q);
	ok(1, "drain of an idle queue returns");
	wq_free(q);
}

/* Each job pushes two children until depth 0: 2^(d+1) - 1 jobs in all. */
static struct wq *tree_q;
static atomic_int tree_fail;

static void tree_job(void *arg)
{
	intptr_t depth = (intptr_t)arg;

	sleep_ms(depth == 0 ? 1 : 0);
	atomic_fetch_add(&counter, 1);
	if (depth == 0)
		return;
	for (int i = 0; i < 2; i++)
		if (wq_push(tree_q, tree_job, (void *)(depth - 1)) != 0)
			atomic_fetch_add(&tree_fail, 1);
}

static void test_jobs_push_jobs(void)
{
	int rc = wq_new(&tree_q, 4, "tree");

	atomic_store(&counter, 0);
	rc = rc ? rc : wq_push(tree_q, tree_job, (void *)(intptr_t)9);
	is_int(rc, 0, "push the root job");
	wq_drain(tree_q);
	is_int(atomic_load(&counter), 1023, "drain waits for jobs pushed by jobs");
	is_int(atomic_load(&tree_fail), 0, "jobs could push jobs");
	wq_free(tree_q);
}

/* wq_pending counts queued and running jobs. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

static void gate_job(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&gate_lock);
	gate_entered = 1;
	pthread_cond_broadcast(&gate_cond);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

static void test_pending(void)
{
	struct wq *q = NULL;
	int rc = wq_new(&q, 1, "pend");

	rc = rc ? rc : wq_push(q, gate_job, NULL);
	pthread_mutex_lock(&gate_lock);
	while (rc == 0 && !gate_entered)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = wq_push(q, inc_job, NULL);
	is_int(rc, 0, "push a blocking job and 3 more");
	is_int(wq_pending(q), 4, "pending counts the running job and the queued ones");
	pthread_mutex_lock(&gate_lock);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	wq_drain(q);
	is_int(wq_pending(q), 0, "pending is 0 after drain");
	wq_free(q);
}

/* wq_free runs everything queued before it, then refuses new work. */
static struct wq *shut_q;
static atomic_int shut_rc;

static void slow_job(void *arg)
{
	(void)arg;
	sleep_ms(2);
	atomic_fetch_add(&counter, 1);
}

static void refuse_job(void *arg)
{
	int rc = 0;

	(void)arg;
	/* Keep pushing (no-op jobs) until wq_free starts; bounded at ~5 s. */
	for (int i = 0; i < 5000 && rc == 0; i++) {
		rc = wq_push(shut_q, inc_job, NULL);
		sleep_ms(1);
	}
	atomic_store(&shut_rc, rc);
}

static void test_free(void)
{
	int rc = wq_new(&shut_q, 2, "shut");

	atomic_store(&counter, 0);
	for (int i = 0; i < 100 && rc == 0; i++)
		rc = wq_push(shut_q, slow_job, NULL);
	rc = rc ? rc : wq_push(shut_q, refuse_job, NULL);
	is_int(rc, 0, "queue 100 slow jobs and a pusher");
	wq_free(shut_q);
	ok(atomic_load(&counter) >= 100, "wq_free ran every queued job");
	is_int(atomic_load(&shut_rc), -ESHUTDOWN, "wq_push during wq_free is -ESHUTDOWN");
}

/* Thread names and signal mask, seen from inside a job. */
static char seen_name[32];
static int seen_sigint_blocked;

static void inspect_job(void *arg)
{
	sigset_t set;

	(void)arg;
	if (pthread_getname_np(pthread_self(), seen_name, sizeof(seen_name)) != 0)
		seen_name[0] = '\0';
	sigemptyset(&set);
	pthread_sigmask(SIG_BLOCK, NULL, &set);
	seen_sigint_blocked = sigismember(&set, SIGINT) == 1;
}

static void test_names(void)
{
	struct wq *q = NULL;
	sigset_t set;
	int rc = wq_new(&q, 1, "uploadworkers15");

	rc = rc ? rc : wq_push(q, inspect_job, NULL);
	is_int(rc, 0, "queue with a 15-character name");
	wq_drain(q);
	is_str(seen_name, "uploadworkers-0", "thread name is the prefix cut to fit \"-N\"");
	ok(seen_sigint_blocked, "workers run with SIGINT blocked");
	sigemptyset(&set);
	pthread_sigmask(SIG_BLOCK, NULL, &set);
	ok(!sigismember(&set, SIGINT), "the caller's signal mask is restored");
	wq_free(q);
	q = NULL;
	rc = wq_new(&q, 2, "s3");
	rc = rc ? rc : wq_push(q, inspect_job, NULL);
	wq_drain(q);
	ok(rc == 0 && strncmp(seen_name, "s3-", 3) == 0, "short names get \"-N\" appended");
	wq_free(q);
}

int main(void)
{
	test_new();
	test_fifo();
	test_many_pushers();
	test_jobs_push_jobs();
	test_pending();
	test_free();
	test_names();
	return tap_done();
}
