// The sandbox process of a pod: it holds the pod's namespaces for the pod's lifetime and
// does nothing else. containerd starts it first in every pod (the pinned sandbox image).
//   - blocks in pause() until a signal arrives;
//   - SIGINT or SIGTERM: exits 0 (the runtime is tearing the sandbox down);
//   - SIGCHLD: reaps every child that has ended. When the pod shares one PID namespace this
//     process is its init, and orphans of the pod's containers are reparented to it.
// Built with `gcc -static` by scripts/node-images, so the image needs no libc.

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo) {
  (void)signo;
  _exit(0);
}

static void on_child(int signo) {
  (void)signo;
  int saved = errno;  // a handler must not change errno for the code it interrupted
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  if (sigaction(signo, &action, NULL) == 0) return 0;
  fprintf(stderr, "pause: cannot handle signal %d: %s\n", signo, strerror(errno));
  return -1;
}

int main(int argc, char **argv) {
  if (argc > 1) {
    fprintf(stderr, "usage: %s (no arguments; it waits for SIGINT or SIGTERM)\n", argv[0]);
    return 2;
  }
  if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
      handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
    return 1;
  }
  for (;;) pause();
}
