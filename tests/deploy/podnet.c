/*
 * Deploy tier: a pod's own address on a shared host network.
 *
 * In Kubernetes every pod has its own network namespace, so a server that binds the wildcard
 * address (0.0.0.0 or ::, as Kafka's "INTERNAL://:9092" and uvicorn's "--host 0.0.0.0" do) is
 * reachable on the pod's IP only. Here pods share the host's network and each gets a loopback
 * address instead (127.0.x.y, in DEPLOY_TIER_POD_IP); this preload library moves a wildcard bind
 * onto that address, so three brokers can all listen on :9092 and none collides with the dev stack.
 *
 * A Service's port may differ from its pods' (the app's Services answer on 80 for the pods'
 * 8000); kube-proxy rewrites the one into the other. Here a Service's name resolves to its pods'
 * addresses (the pod's /etc/hosts), and DEPLOY_TIER_SERVICE_PORTS lists "address:port:target"
 * entries, space-separated: a connect to such an address and port goes to the target port.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);
typedef int (*connect_function)(int, const struct sockaddr *, socklen_t);

#define MAX_SERVICE_PORTS 256

struct service_port {
    struct in_addr address;
    in_port_t port;   /* network order */
    in_port_t target; /* network order */
};

static struct service_port service_ports[MAX_SERVICE_PORTS];
static int service_port_count;

/* Read once, when the library loads, before the program's threads start. */
__attribute__((constructor)) static void load_service_ports(void) {
    const char *table = getenv("DEPLOY_TIER_SERVICE_PORTS");
    if (table == NULL) {
        return;
    }
    char *copy = strdup(table);
    char *rest = NULL;
    for (char *entry = strtok_r(copy, " ", &rest);
         entry != NULL && service_port_count < MAX_SERVICE_PORTS;
         entry = strtok_r(NULL, " ", &rest)) {
        char address[64];
        unsigned port, target;
        struct service_port *slot = &service_ports[service_port_count];
        if (sscanf(entry, "%63[^:]:%u:%u", address, &port, &target) == 3 && port < 65536 &&
            target < 65536 && inet_pton(AF_INET, address, &slot->address) == 1) {
            slot->port = htons((uint16_t)port);
            slot->target = htons((uint16_t)target);
            service_port_count++;
        }
    }
    free(copy);
}

/* The target port for a connect to address:port, or 0 when no Service port maps it. */
static in_port_t service_target(struct in_addr address, in_port_t port) {
    for (int i = 0; i < service_port_count; i++) {
        if (service_ports[i].address.s_addr == address.s_addr && service_ports[i].port == port) {
            return service_ports[i].target;
        }
    }
    return 0;
}

int connect(int fd, const struct sockaddr *address, socklen_t length) {
    static connect_function real_connect;
    if (real_connect == NULL) {
        real_connect = (connect_function)dlsym(RTLD_NEXT, "connect");
    }
    if (address != NULL && address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, address, sizeof moved);
        in_port_t target = service_target(moved.sin_addr, moved.sin_port);
        if (target != 0) {
            moved.sin_port = target;
            return real_connect(fd, (const struct sockaddr *)&moved, sizeof moved);
        }
    } else if (address != NULL && address->sa_family == AF_INET6 &&
               length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 moved;
        memcpy(&moved, address, sizeof moved);
        if (IN6_IS_ADDR_V4MAPPED(&moved.sin6_addr)) { /* a dual-stack socket's IPv4 peer */
            struct in_addr v4;
            memcpy(&v4, &moved.sin6_addr.s6_addr[12], sizeof v4);
            in_port_t target = service_target(v4, moved.sin6_port);
            if (target != 0) {
                moved.sin6_port = target;
                return real_connect(fd, (const struct sockaddr *)&moved, sizeof moved);
            }
        }
    }
    return real_connect(fd, address, length);
}

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
