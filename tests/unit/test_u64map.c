#include "test.h"
#include "base/u64map.h"

TEST(put_get_del_against_model)
{
    enum { N = 5000 };
    static uintptr_t model[N + 1];
    u64map m;
    u64map_init(&m);
    memset(model, 0, sizeof model);
    for (int round = 0; round < 200000; round++) {
        uint64_t k = 1 + test_rand() % N;
        int op = (int)(test_rand() % 3);
        if (op == 0) {
            uintptr_t v = (uintptr_t)test_rand() | 1;
            CHECK_EQ_INT(u64map_put(&m, k, (void *)v), 0);
            model[k] = v;
        } else if (op == 1) {
            CHECK(u64map_del(&m, k) == (void *)model[k]);
            model[k] = 0;
        } else {
            CHECK(u64map_get(&m, k) == (void *)model[k]);
        }
    }
    size_t count = 0;
    for (int k = 1; k <= N; k++) {
        CHECK(u64map_get(&m, (uint64_t)k) == (void *)model[k]);
        count += model[k] != 0;
    }
    CHECK_EQ_INT(m.count, count);
    u64map_free(&m);
}

TEST(empty_map)
{
    u64map m;
    u64map_init(&m);
    CHECK(u64map_get(&m, 7) == NULL);
    CHECK(u64map_del(&m, 7) == NULL);
    u64map_free(&m);
}

int main(void)
{
    test_seed();
    RUN(put_get_del_against_model);
    RUN(empty_map);
    return test_summary("u64map");
}
