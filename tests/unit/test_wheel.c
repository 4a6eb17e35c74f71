#include "test.h"
#include "net/wheel.h"

typedef struct item { wheel_node n; int fired; int reschedule_ms; wheel *w; } item;

static void expire(wheel_node *n, void *arg)
{
    item *it = (item *)n;
    it->fired++;
    (*(int *)arg)++;
    if (it->reschedule_ms) wheel_schedule(it->w, n, (uint64_t)it->reschedule_ms);
}

static wheel w; /* large: keep it off the stack */

TEST(fires_at_deadline_rounded_up)
{
    wheel_init(&w, 100);
    item a = {0}, b = {0};
    int count = 0;
    wheel_schedule(&w, &a.n, 250); /* 3 ticks */
    wheel_schedule(&w, &b.n, 0);   /* at least one tick */
    CHECK(wheel_scheduled(&a.n));
    CHECK_EQ_INT(w.count, 2);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(b.fired, 1);
    CHECK_EQ_INT(a.fired, 0);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 0);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 1);
    CHECK(!wheel_scheduled(&a.n));
    CHECK_EQ_INT(w.count, 0);
}

TEST(cancel_and_reschedule)
{
    wheel_init(&w, 10);
    item a = {0};
    int count = 0;
    wheel_schedule(&w, &a.n, 20);
    wheel_cancel(&w, &a.n);
    wheel_cancel(&w, &a.n); /* idempotent */
    for (int i = 0; i < 5; i++) wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 0);
    wheel_schedule(&w, &a.n, 20);
    wheel_schedule(&w, &a.n, 50); /* moves it */
    CHECK_EQ_INT(w.count, 1);
    for (int i = 0; i < 4; i++) wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 0);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 1);
}

TEST(beyond_one_lap)
{
    wheel_init(&w, 1);
    item a = {0};
    int count = 0;
    wheel_schedule(&w, &a.n, WHEEL_SLOTS * 2 + 5);
    for (int i = 0; i < WHEEL_SLOTS * 2 + 4; i++) wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 0);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 1);
}

TEST(reschedule_from_callback_one_lap)
{
    wheel_init(&w, 1);
    item a = {0};
    a.w = &w;
    a.reschedule_ms = WHEEL_SLOTS; /* lands in the slot being expired */
    int count = 0;
    wheel_schedule(&w, &a.n, 1);
    CHECK_EQ_INT(wheel_tick(&w, expire, &count), 1);
    for (int i = 0; i < WHEEL_SLOTS - 1; i++) wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 1);
    wheel_tick(&w, expire, &count);
    CHECK_EQ_INT(a.fired, 2);
    a.reschedule_ms = 0;
}

TEST(many_nodes_random)
{
    wheel_init(&w, 10);
    enum { N = 2000 };
    static item items[N];
    int count = 0;
    memset(items, 0, sizeof items);
    uint64_t due[N];
    for (int i = 0; i < N; i++) {
        uint64_t ms = test_rand() % 30000;
        wheel_schedule(&w, &items[i].n, ms);
        due[i] = ms == 0 ? 1 : (ms + 9) / 10;
    }
    for (uint64_t tick = 1; tick <= 3001; tick++) {
        wheel_tick(&w, expire, &count);
        for (int i = 0; i < N; i += 97)
            CHECK_EQ_INT(items[i].fired, tick >= due[i] ? 1 : 0);
    }
    CHECK_EQ_INT(count, N);
    CHECK_EQ_INT(w.count, 0);
}

int main(void)
{
    test_seed();
    RUN(fires_at_deadline_rounded_up);
    RUN(cancel_and_reschedule);
    RUN(beyond_one_lap);
    RUN(reschedule_from_callback_one_lap);
    RUN(many_nodes_random);
    return test_summary("wheel");
}
