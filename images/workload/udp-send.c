// udp-send HOST PORT: sends every line read from standard input, newline included, as one
// UDP datagram to HOST:PORT (an IPv4 or IPv6 address), the way `nc -u` would; Debian's
// busybox-static has no `nc -u`. Numbered datagrams from a shell loop, for example:
//   i=1; while [ $i -le 50 ]; do echo "app-$i"; i=$((i+1)); done | udp-send 10.88.0.1 9
// Exits 1 on the first datagram that cannot be sent. Built with `gcc -static`.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s HOST PORT < lines (each line one datagram)\n", argv[0]);
    return 2;
  }
  char *end;
  long port = strtol(argv[2], &end, 10);
  if (*argv[2] == '\0' || *end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "udp-send: %s is not a port number\n", argv[2]);
    return 2;
  }

  struct sockaddr_storage to;
  socklen_t to_len;
  memset(&to, 0, sizeof to);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&to;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&to;
  if (inet_pton(AF_INET, argv[1], &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((unsigned short)port);
    to_len = sizeof *v4;
  } else if (inet_pton(AF_INET6, argv[1], &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((unsigned short)port);
    to_len = sizeof *v6;
  } else {
    fprintf(stderr, "udp-send: %s is not an IPv4 or IPv6 address (names are not resolved)\n", argv[1]);
    return 2;
  }

  int sock = socket(to.ss_family, SOCK_DGRAM, 0);
  if (sock < 0) {
    fprintf(stderr, "udp-send: socket: %s\n", strerror(errno));
    return 1;
  }
  char *line = NULL;
  size_t capacity = 0;
  ssize_t length;
  while ((length = getline(&line, &capacity, stdin)) > 0) {
    if (sendto(sock, line, (size_t)length, 0, (struct sockaddr *)&to, to_len) != length) {
      fprintf(stderr, "udp-send: sending to %s port %ld: %s\n", argv[1], port, strerror(errno));
      return 1;
    }
  }
  free(line);
  close(sock);
  return 0;
}
