/* spawn REPORT CMD [ARG...]: run CMD, wait for it, write its figures to the file REPORT as
 * "wall_s user_s sys_s maxrss_kb exit_code". Used by harness.py so that a child's peak RSS is
 * its own: Linux keeps ru_maxrss across exec, so a child forked from the (large) Python
 * benchmark would report Python's RSS as its peak. Forked from this small program, it does not.
 * CPU time and maxrss cover the child and the descendants it reaped (wait4). */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn REPORT CMD [ARG...]\n");
        return 2;
    }
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) { perror("spawn: fork"); return 127; }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror("spawn: exec");
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("spawn: wait4"); return 127; }
    double wall = now() - t0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    FILE *f = fopen(argv[1], "w");
    if (f == NULL) { perror("spawn: report"); return 127; }
    fprintf(f, "%.6f %ld.%06ld %ld.%06ld %ld %d\n", wall, (long)ru.ru_utime.tv_sec,
            (long)ru.ru_utime.tv_usec, (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec,
            ru.ru_maxrss, code);
    fclose(f);
    return code;
}
