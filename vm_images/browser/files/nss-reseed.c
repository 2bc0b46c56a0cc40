/*
 * nss-reseed.so: preloaded into Firefox in the browser guest (LD_PRELOAD).
 *
 * Every session restores the same snapshot, so Firefox's NSS random generator (a DRBG that
 * reseeds itself only every 2^48 calls) would hand every session the same "random" bytes:
 * the same TLS ClientHello randoms and the same ephemeral key shares (measured: the first
 * three handshakes of two sessions were byte for byte identical). The kernel's generator is
 * reseeded by vmgenid on restore, but that does not reach a userspace DRBG.
 *
 * The app sets the guest clock right after every restore, before the network comes up. A
 * clock set cancels a CLOCK_REALTIME timerfd armed with TFD_TIMER_CANCEL_ON_SET, so the
 * first connect() after a restore sees it, synchronously, and reseeds NSS from the (fresh)
 * kernel generator before that connection exists: PK11_RandomUpdate with more data than
 * NSS's additional-input cache reseeds the DRBG at once. A lock makes concurrent connect()s
 * wait for the reseed. A clock set without a restore only reseeds once more: harmless.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*random_update_fn)(void *, size_t);

static int clock_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static connect_fn real_connect;

static void arm(void)
{
    struct itimerspec far = {.it_value = {.tv_sec = INT32_MAX}};
    if (timerfd_settime(clock_fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &far, NULL) < 0) {
        close(clock_fd);
        clock_fd = -1;
    }
}

static void reseed(void)
{
    /* NSS is in the process once Firefox runs; never load it ourselves. */
    void *nss = dlopen("libnss3.so", RTLD_NOW | RTLD_NOLOAD);
    if (nss == NULL)
        return;
    random_update_fn update = (random_update_fn)dlsym(nss, "PK11_RandomUpdate");
    unsigned char fresh[8 * 1024 + 64]; /* > NSS's 8 KiB additional-data cache */
    size_t got = 0;
    while (update != NULL && got < sizeof fresh) {
        ssize_t n = getrandom(fresh + got, sizeof fresh - got, 0);
        if (n < 0 && errno != EINTR)
            break;
        got += n > 0 ? (size_t)n : 0;
    }
    if (update != NULL && got == sizeof fresh)
        update(fresh, sizeof fresh); /* fails harmlessly where NSS is not initialised */
    explicit_bzero(fresh, sizeof fresh);
    dlclose(nss);
}

__attribute__((constructor)) static void init(void)
{
    real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    clock_fd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    if (clock_fd >= 0)
        arm();
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    int saved = errno;
    pthread_mutex_lock(&lock);
    if (clock_fd >= 0) {
        uint64_t expirations;
        if (read(clock_fd, &expirations, sizeof expirations) < 0 && errno == ECANCELED) {
            reseed();
            arm();
        }
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    if (real_connect == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_connect(fd, addr, len);
}
