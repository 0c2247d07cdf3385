/*
 * verify.h - `cdnfs verify`: fetch every file of a mount over its public URL
 * and check what the web gets against the header rules.
 *
 *   cdnfs verify [-v] [-o OPT[,OPT...]] MOUNTPOINT [PATH...]
 *
 * Options: config=FILE (the rules, as for --explain), ca_file=FILE,
 * insecure, timeout=SECONDS, parallel=N (requests at a time, default 8),
 * log_level; -v prints one line per file checked.
 */
#ifndef CDNFS_VERIFY_H
#define CDNFS_VERIFY_H

/* The exit status of `cdnfs verify ...` when argv is such a command line
 * (argv[1] is "verify" and its first operand is a mounted cdnfs): 0 when
 * every file passed, 1 when a problem was found, 2 when the check could not
 * run.  -1 when argv is not a verify command (a mount of a bucket named
 * "verify", say). */
int verify_command(int argc, char **argv);

#endif
