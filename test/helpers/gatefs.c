/*
 * gatefs: a read-only passthrough FUSE file system whose reads wait while a
 * gate is closed. Tests use it as a slow disk that they control: put a layer
 * file behind it, close the gate, and a read of that file blocks until the
 * gate opens, with no timing involved.
 *
 *   GATEFS_SOURCE=DIR GATEFS_GATE=FILE gatefs MOUNTPOINT -f -o ro
 *
 * Reads proceed while FILE exists. While reads are waiting, FILE.waiting
 * holds their number (written atomically), so a test knows when a reader is
 * blocked. Its files are opened direct_io, which keeps the page cache out of
 * read(): every read reaches gatefs (a splice from its files still fills
 * their page cache). libfuse3's high-level API, built with
 * `pkg-config --cflags --libs fuse3`.
 */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *source;
static const char *gate;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int waiting;

static void source_path(char *out, const char *path) {
  snprintf(out, PATH_MAX, "%s%s", source, path);
}

static void publish_waiting(int delta) {
  char tmp[PATH_MAX], final[PATH_MAX];
  pthread_mutex_lock(&lock);
  waiting += delta;
  snprintf(final, sizeof final, "%s.waiting", gate);
  snprintf(tmp, sizeof tmp, "%s.waiting.tmp", gate);
  FILE *f = fopen(tmp, "w");
  if (f) {
    fprintf(f, "%d\n", waiting);
    fclose(f);
    rename(tmp, final);
  }
  pthread_mutex_unlock(&lock);
}

static int gf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  char p[PATH_MAX];
  source_path(p, path);
  return lstat(p, st) == 0 ? 0 : -errno;
}

static int gf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
  (void)off;
  (void)fi;
  (void)flags;
  char p[PATH_MAX];
  source_path(p, path);
  DIR *d = opendir(p);
  if (!d) return -errno;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) fill(buf, e->d_name, NULL, 0, 0);
  closedir(d);
  return 0;
}

static int gf_open(const char *path, struct fuse_file_info *fi) {
  char p[PATH_MAX];
  source_path(p, path);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  int fd = open(p, O_RDONLY);
  if (fd < 0) return -errno;
  fi->fh = (uint64_t)fd;
  fi->direct_io = 1;
  return 0;
}

static int gf_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  if (access(gate, F_OK) != 0) {
    publish_waiting(1);
    while (access(gate, F_OK) != 0) usleep(5000);
    publish_waiting(-1);
  }
  ssize_t r = pread((int)fi->fh, buf, size, off);
  return r < 0 ? -errno : (int)r;
}

static int gf_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  close((int)fi->fh);
  return 0;
}

int main(int argc, char **argv) {
  source = getenv("GATEFS_SOURCE");
  gate = getenv("GATEFS_GATE");
  if (!source || !gate) {
    fprintf(stderr, "gatefs: set GATEFS_SOURCE and GATEFS_GATE\n");
    return 2;
  }
  publish_waiting(0);
  struct fuse_operations ops;
  memset(&ops, 0, sizeof ops);
  ops.getattr = gf_getattr;
  ops.readdir = gf_readdir;
  ops.open = gf_open;
  ops.read = gf_read;
  ops.release = gf_release;
  return fuse_main(argc, argv, &ops, NULL);
}
