/* summary: `parley-bench summary [--targets FILE] --out FILE RUN.json...`
 * merges the runs of one suite into one object (generated, machine,
 * targets, floor_ratios, runs) and prints the targets table with the
 * conditions each run was taken under.
 */
#ifndef BENCH_SUMMARY_H
#define BENCH_SUMMARY_H

/* argv[1] is "summary". Returns the exit status. */
int summary_main(int argc, char **argv);

#endif
