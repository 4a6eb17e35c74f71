/* targets: the goals the figures are judged by, read at run time from a
 * data file (bench/targets.conf; its header documents the format).
 *
 * A target names one figure of one run (RUN:PATH), the conditions that
 * make it met, how to print the measurement, and optionally its ratio to
 * the floor reference of the same suite. `parley-bench summary` prints
 * them all as the targets table and writes them into latest.json; every
 * run prints the targets whose figure it measured right after its table.
 *
 * A targets set owns its rows (targets_load ... targets_free); a runset
 * borrows the run texts it indexes.
 */
#ifndef BENCH_TARGETS_H
#define BENCH_TARGETS_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/jw.h"

typedef struct targets targets;

#define RUNSET_MAX 64

/* Runs by label: each text is one run object (borrowed). */
typedef struct runset {
    int n;
    char label[RUNSET_MAX][48];
    const char *text[RUNSET_MAX];
    size_t len[RUNSET_MAX];
} runset;

/* Adds a run object; ERR_INVALID if it is not a JSON object with a
 * "label", ERR_FULL past RUNSET_MAX. */
int runset_add(runset *rs, const char *text, size_t len);

/* A figure: RUN:PATH (PATH inside the run's "figures", or params.KEY).
 * NAN when the run or the figure is absent. */
double runset_figure(const runset *rs, const char *ref);

/* Where the targets file is: `given` if not NULL, else bench/targets.conf
 * under the working directory, else next to the sources the binary was
 * built from (<exe>/../../bench/targets.conf). */
void targets_path(const char *given, char *out, size_t cap);

/* Reads and checks a targets file (every expression, template and
 * condition). NULL on error, with a message "FILE:LINE: what" in err. */
targets *targets_load(const char *path, char *err, size_t errcap);
void targets_free(targets *t);

/* Number of targets in t. */
int targets_count(const targets *t);

/* Prints the targets table (name, goal, measured, met, vs floor) and
 * writes it as "targets": [...] into j (an object open at that level). */
void targets_table(const targets *t, const runset *rs, jw *j);

/* Writes "floor_ratios": {...} into j. */
void targets_floor_ratios(const targets *t, const runset *rs, jw *j);

/* Prints every note whose expressions are all known. */
void targets_notes(const targets *t, const runset *rs);

/* After a run: prints the targets whose figure is a figure of run `label`
 * (text: the run's JSON). A missing targets file is reported, not fatal. */
void targets_print_run(const char *given_path, const char *label, const char *text, size_t len);

#endif
