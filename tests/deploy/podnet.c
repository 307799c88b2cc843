/*
 * Deploy tier: a pod's own address on a shared host network.
 *
 * In Kubernetes every pod has its own network namespace, so a server that binds the wildcard
 * address (0.0.0.0 or ::, as Kafka's "INTERNAL://:9092" and uvicorn's "--host 0.0.0.0" do) is
 * reachable on the pod's IP only. Here pods share the host's network and each gets a loopback
 * address instead (127.0.x.y, in DEPLOY_TIER_POD_IP); this preload library moves a wildcard bind
 * onto that address, so three brokers can all listen on :9092 and none collides with the dev stack.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function real_bind;
    if (real_bind == NULL) {
        real_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
    }
    const char *pod_ip = getenv("DEPLOY_TIER_POD_IP");
    struct in_addr pod;
    if (address == NULL || pod_ip == NULL || inet_pton(AF_INET, pod_ip, &pod) != 1) {
        return real_bind(fd, address, length);
    }
    if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, address, sizeof moved);
        if (moved.sin_addr.s_addr == htonl(INADDR_ANY)) {
            moved.sin_addr = pod;
            return real_bind(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    } else if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 moved;
        memcpy(&moved, address, sizeof moved);
        if (IN6_IS_ADDR_UNSPECIFIED(&moved.sin6_addr)) {
            /* The IPv4-mapped form (::ffff:127.0.x.y) of a dual-stack socket, as Java opens. */
            memset(&moved.sin6_addr, 0, sizeof moved.sin6_addr);
            moved.sin6_addr.s6_addr[10] = 0xff;
            moved.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&moved.sin6_addr.s6_addr[12], &pod, sizeof pod);
            return real_bind(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    }
    return real_bind(fd, address, length);
}
