// The mount daemon's FUSE binding: libfuse3's low-level API on its own
// threads, with the read path in C.
//
// Why not fuse-native: it hands every request to Node's main thread and
// back (uv_async + a semaphore), which caps 4 KiB O_DIRECT random reads
// below qemu-storage-daemon's. Here the tree (inode = index + 1; fixed at
// mount but for lazy directories, below) is served from C, and a read of a view is served on the
// libfuse thread that received it, as long as the regions it touches have
// been *published* by JS: each region's resolved runs as file pieces (fd,
// offset delta, file end: a chain file or raw image at the same offsets, a
// qcow2 image's standard clusters), or zeros. Anything else (a region not
// yet resolved, a compressed cluster or broken run, a short or failed read,
// chain.json) goes to JS through a thread-safe function and the libfuse
// thread waits for the answer; JS then publishes what it resolved.
//
// Requests are up to 1008 KiB (max_read; libfuse2 stopped at 128 KiB; the
// daemon widens the mount's readahead window so that the kernel sends them
// that large). A read of two pages or more is spliced: its pieces go from the layer files' page
// cache into a pipe of this thread (zeros by vmsplice of one zero buffer),
// and the pipe is handed to fuse_reply_data, which splices it into
// /dev/fuse: one kernel copy per byte instead of pread's copy into the
// daemon plus the write's copy out of it. The thread's own pipe (rather
// than handing libfuse the layer fds) lets a short or failed piece fall
// back to pread, and then to JS, which words the error, before anything is
// sent. Smaller reads pread into a buffer of the thread.
//
// The node table grows while mounted: a directory flagged lazy (a backup
// target's volumes/<volume>/backups/) gets its entries from JS on its first
// lookup or opendir (kExpand; the libfuse thread waits, others go on), and
// JS adds them with addNodes. One writer (Node's main thread) appends nodes
// to a segmented table (fixed chunks of node pointers that never move) and
// publishes the new count with a release store; a directory's entries are an
// immutable Children set published once, also with a release store, after
// the nodes it names. Readers (libfuse threads) take no lock for the tree:
// an acquire load of the count or of the Children pointer makes everything
// they can reach visible. Nodes and Children are never freed (they live as
// long as the mount handle, the process).
//
// The published runs live in a two-level table per view (chunks of 256
// regions allocated on demand) under one rwlock held only to copy a read's
// pieces out, never across I/O. Their memory is bounded by a byte budget:
// past it the whole table is dropped and refills from JS on demand.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <napi.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kChunkShift = 8;  // 256 regions per chunk
constexpr uint64_t kChunkRegions = 1u << kChunkShift;
constexpr int kMaxPieces = 256;  // a 1 MiB read touching more runs goes to JS (40 bytes each on the stack)
// The largest request: libfuse splices a reply through a pipe of its own
// that must hold the reply, its header and three pages more; an
// unprivileged pipe (no CAP_SYS_RESOURCE, as in most containers) stops at
// /proc/sys/fs/pipe-max-size, 1 MiB by default, and past it libfuse copies
// every reply through a fresh buffer instead (page faults and two copies).
constexpr size_t kPipe = 1u << 20;
constexpr size_t kMaxRead = kPipe - 16 * 1024;  // 1008 KiB: max_read, so below the kernel's 256 pages
constexpr size_t kSpliceMin = 2 * 4096;  // libfuse copies smaller replies anyway
constexpr double kTimeout = 1.0;  // attribute and entry cache, seconds (libfuse2's high-level default)
constexpr int64_t kZero = -1;  // run fd: zeros
constexpr int64_t kSlow = -2;  // run fd: only JS can read it

enum Op { kOpen = 0, kRead = 1, kSize = 2, kExit = 3, kResolve = 4, kAhead = 5, kExpand = 6 };

constexpr int kNodeChunkShift = 12;  // 4,096 node pointers per chunk
constexpr size_t kNodeChunk = size_t{1} << kNodeChunkShift;
constexpr size_t kNodeChunks = 4096;  // up to 16 Mi nodes

struct Run {
  uint64_t off;  // view offset
  uint64_t len;
  int64_t fd;
  int64_t delta;  // file position = view offset + delta
  uint64_t fend;  // file bytes at or past it read as zeros (a layer file's size at open)
};

struct Region {
  uint32_t count;
  Run runs[1];
};

size_t RegionBytes(uint32_t count) { return sizeof(Region) + (count - 1) * sizeof(Run); }

// A directory's entries, in order and by name; immutable once published.
struct Children {
  std::vector<int> order;
  std::unordered_map<std::string, int> byName;
};

struct Node {
  std::string path;
  std::string name;  // the last component ("" for the root)
  int parent = -1;
  bool dir = false;
  bool view = false;
  bool lazy = false;  // a directory whose entries JS lists on first use
  bool direct = false;  // a file whose size is known once opened (served direct_io, st_size 0 until then)
  uint32_t mode = 0;
  std::atomic<int64_t> size{0};  // -1: ask JS (chain.json, built on first use)
  std::atomic<int64_t> blocks{0};
  struct timespec mtime {};
  struct timespec ctime {};
  std::atomic<bool> stale{false};
  std::atomic<uint64_t> lastEnd{0};  // where the last read ended (sequential reads start near it)
  std::atomic<uint64_t> aheadTo{0};  // view bytes below it have been announced to the layer files
  std::atomic<uint64_t> asked{0};  // 1 + the last region JS was asked to publish ahead
  int index = 0;  // in Fs::nodes
  std::vector<Region**> chunks;  // under Fs::lock
  std::atomic<const Children*> children{nullptr};  // a directory's entries; null: a lazy one not listed yet
};

// The nodes, by index: appended by one thread (JS's), read by any.
class NodeTable {
 public:
  size_t size() const { return count_.load(std::memory_order_acquire); }
  // The node at i < size().
  Node* at(size_t i) const { return chunks_[i >> kNodeChunkShift].load(std::memory_order_relaxed)[i & (kNodeChunk - 1)]; }
  // Stores n at index size() + pending; visible to readers at publish(). False when full.
  bool stage(size_t pending, Node* n) {
    size_t i = count_.load(std::memory_order_relaxed) + pending;
    if ((i >> kNodeChunkShift) >= kNodeChunks) return false;
    Node** chunk = chunks_[i >> kNodeChunkShift].load(std::memory_order_relaxed);
    if (!chunk) {
      chunk = new Node*[kNodeChunk]();
      chunks_[i >> kNodeChunkShift].store(chunk, std::memory_order_relaxed);
    }
    chunk[i & (kNodeChunk - 1)] = n;
    return true;
  }
  void publish(size_t added) { count_.store(count_.load(std::memory_order_relaxed) + added, std::memory_order_release); }

 private:
  std::atomic<Node**> chunks_[kNodeChunks] = {};
  std::atomic<size_t> count_{0};
};

// One call into JS: the libfuse thread waits on `done` for the answer.
struct Call {
  int op;
  int node;
  double pos;
  size_t len;
  char* buf;
  int64_t result;
  sem_t done;
};

struct Fs;
void CallJs(Napi::Env env, Napi::Function fn, Fs* fs, Call* call);
using Tsfn = Napi::TypedThreadSafeFunction<Fs, Call, CallJs>;

struct Fs {
  NodeTable nodes;
  pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
  size_t bytes = 0;  // published runs, under lock
  size_t budget = 0;
  uint64_t region = 4u << 20;
  std::atomic<uint64_t> statfsBlocks{0};
  std::atomic<uint64_t> files{0};
  std::string mountPoint;
  struct fuse_session* se = nullptr;
  pthread_t thread{};
  uid_t uid = getuid();  // the mounting user owns every file
  gid_t gid = getgid();
  Tsfn tsfn;
  std::atomic<bool> detached{false};
  std::atomic<int> inflight{0};
  std::atomic<uint64_t> fastReads{0};
  std::atomic<uint64_t> slowReads{0};
  std::atomic<uint64_t> splicedReads{0};
  std::atomic<uint64_t> resolvedReads{0};
  std::atomic<uint64_t> flushes{0};
  uint64_t ahead = 0;  // bytes announced ahead of a sequential reader (0: none)
  Call exitCall{};
};

// Zeros for vmsplice: written once so that its pages are real ones (~1 MiB).
alignas(4096) char gZeros[kMaxRead];

// What each libfuse thread keeps between requests: a buffer for reads that
// are copied (small ones, JS's answers) and the pipe spliced reads are
// assembled in. Both are made on first use (1 MiB each, per thread).
struct ThreadState {
  char* buf = nullptr;
  int pipe[2] = {-1, -1};
  bool pipeFailed = false;
  ~ThreadState() {
    free(buf);
    ClosePipe();
  }
  char* Buffer() {
    if (!buf) buf = static_cast<char*>(aligned_alloc(4096, kMaxRead));
    return buf;
  }
  // The pipe, empty, or false if this thread cannot have one.
  bool Pipe() {
    if (pipe[0] >= 0) return true;
    if (pipeFailed) return false;
    if (pipe2(pipe, O_CLOEXEC | O_NONBLOCK) != 0 || fcntl(pipe[0], F_SETPIPE_SZ, kPipe) < static_cast<int>(kMaxRead)) {
      ClosePipe();
      pipeFailed = true;  // pipe-max-size below 1 MiB: every read is copied
      return false;
    }
    return true;
  }
  void ClosePipe() {
    if (pipe[0] >= 0) close(pipe[0]);
    if (pipe[1] >= 0) close(pipe[1]);
    pipe[0] = pipe[1] = -1;
  }
};
thread_local ThreadState tls;

Fs* Self(fuse_req_t req) { return static_cast<Fs*>(fuse_req_userdata(req)); }

// --- calls into JS -----------------------------------------------------------

int64_t Ask(Fs* fs, int op, int node, double pos, size_t len, char* buf) {
  Call c{};
  c.op = op;
  c.node = node;
  c.pos = pos;
  c.len = len;
  c.buf = buf;
  c.result = -EIO;
  sem_init(&c.done, 0, 0);
  if (fs->tsfn.BlockingCall(&c) != napi_ok) {
    sem_destroy(&c.done);
    return -EIO;  // JS is going away
  }
  while (sem_wait(&c.done) != 0 && errno == EINTR) {
  }
  sem_destroy(&c.done);
  return c.result;
}

// On Node's main thread: handler(op, node, pos, len, call). JS answers with
// reply(call, result[, bytes]) exactly once (src/fuse/native-fuse.ts).
void CallJs(Napi::Env env, Napi::Function fn, Fs*, Call* c) {
  if (c == nullptr) return;
  if (c->op == kAhead) {  // nobody waits for it: no answer, and the call is ours to free
    if (env != nullptr) {
      fn.Call({Napi::Number::New(env, c->op), Napi::Number::New(env, c->node), Napi::Number::New(env, c->pos),
               Napi::Number::New(env, static_cast<double>(c->len)), env.Undefined()});
      if (env.IsExceptionPending()) env.GetAndClearPendingException();
    }
    delete c;
    return;
  }
  if (env == nullptr) {  // the function is being torn down
    if (c->op != kExit) {
      c->result = -EIO;
      sem_post(&c->done);
    }
    return;
  }
  fn.Call({Napi::Number::New(env, c->op), Napi::Number::New(env, c->node), Napi::Number::New(env, c->pos),
           Napi::Number::New(env, static_cast<double>(c->len)),
           c->op == kExit ? env.Undefined() : Napi::External<Call>::New(env, c).As<Napi::Value>()});
  if (env.IsExceptionPending()) env.GetAndClearPendingException();  // the JS side never throws; do not crash
}

// --- the tree --------------------------------------------------------------

// The node of an inode number (index + 1), or null.
Node* At(Fs* fs, fuse_ino_t ino) { return ino >= 1 && ino <= fs->nodes.size() ? fs->nodes.at(ino - 1) : nullptr; }

// A directory's entries, listed first if it is lazy (JS lists them; this
// thread waits): 0, or a negative errno (the listing failed: asked again
// next time). JS lists a directory once however many threads ask.
int Listed(Fs* fs, Node* d, const Children** out) {
  const Children* c = d->children.load(std::memory_order_acquire);
  if (!c && d->lazy) {
    int64_t r = Ask(fs, kExpand, d->index, 0, 0, nullptr);
    if (r < 0) return static_cast<int>(r);
    c = d->children.load(std::memory_order_acquire);
  }
  if (!c) return -EIO;  // JS answered without adding the entries: a bug
  *out = c;
  return 0;
}

int64_t SizeOf(Fs* fs, int idx) {
  Node* n = fs->nodes.at(idx);
  int64_t size = n->size.load();
  if (size >= 0) return size;
  int64_t r = Ask(fs, kSize, idx, 0, 0, nullptr);
  if (r < 0) return r;
  n->blocks = (r + 511) / 512;
  n->size = r;
  return r;
}

int Fill(Fs* fs, int idx, struct stat* st) {
  Node* n = fs->nodes.at(idx);
  memset(st, 0, sizeof *st);
  st->st_ino = static_cast<ino_t>(idx + 1);
  st->st_mode = n->mode;
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_mtim = n->mtime;
  st->st_atim = n->mtime;
  st->st_ctim = n->ctime;
  if (n->dir) {
    st->st_nlink = 2;
    st->st_size = 4096;
    return 0;
  }
  // A direct file's size is asked only once it was opened (asking earlier
  // would make a stat build it: catalog.json of a lazy target lists everything).
  int64_t size = n->direct && n->size.load() < 0 ? 0 : SizeOf(fs, idx);
  if (size < 0) return static_cast<int>(size);
  st->st_nlink = 1;
  st->st_size = size;
  st->st_blksize = 4096;
  st->st_blocks = n->blocks.load();
  return 0;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Fs* fs = Self(req);
  Node* d = At(fs, parent);
  if (!d) return (void)fuse_reply_err(req, ENOENT);
  if (!d->dir) return (void)fuse_reply_err(req, ENOTDIR);
  const Children* c;
  int r = Listed(fs, d, &c);
  if (r < 0) return (void)fuse_reply_err(req, -r);
  auto it = c->byName.find(name);
  if (it == c->byName.end()) return (void)fuse_reply_err(req, ENOENT);
  struct fuse_entry_param e {};
  r = Fill(fs, it->second, &e.attr);
  if (r < 0) return (void)fuse_reply_err(req, -r);
  e.ino = static_cast<fuse_ino_t>(it->second) + 1;
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  fuse_reply_entry(req, &e);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  Fs* fs = Self(req);
  struct stat st;
  int r = At(fs, ino) ? Fill(fs, static_cast<int>(ino - 1), &st) : -ENOENT;
  if (r < 0) fuse_reply_err(req, -r);
  else fuse_reply_attr(req, &st, kTimeout);
}

void OpAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  fuse_reply_err(req, !At(Self(req), ino) ? ENOENT : (mask & W_OK) ? EROFS : 0);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  Fs* fs = Self(req);
  Node* n = At(fs, ino);
  if (!n) return (void)fuse_reply_err(req, ENOENT);
  if (!n->dir) return (void)fuse_reply_err(req, ENOTDIR);
  const Children* c;
  int r = Listed(fs, n, &c);  // a lazy directory is listed here, so that readdir never waits
  if (r < 0) return (void)fuse_reply_err(req, -r);
  fi->fh = ino;
  fuse_reply_open(req, fi);
}

// Entry k of a directory (".", "..", then its children in order), or false
// past the last one.
bool DirEntry(Fs* fs, fuse_ino_t dir, const Children* c, off_t k, const char** name, fuse_ino_t* ino) {
  Node* d = At(fs, dir);
  if (k == 0 || k == 1) {
    *name = k == 0 ? "." : "..";
    *ino = k == 0 || d->parent < 0 ? dir : static_cast<fuse_ino_t>(d->parent + 1);
    return true;
  }
  if (k - 2 >= static_cast<off_t>(c->order.size())) return false;
  int i = c->order[static_cast<size_t>(k - 2)];
  *name = fs->nodes.at(i)->name.c_str();
  *ino = static_cast<fuse_ino_t>(i) + 1;
  return true;
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  Fs* fs = Self(req);
  Node* d = At(fs, ino);
  if (!d || !d->dir) return (void)fuse_reply_err(req, EBADF);
  const Children* c;
  int r = Listed(fs, d, &c);
  if (r < 0) return (void)fuse_reply_err(req, -r);
  std::vector<char> buf(size);
  size_t used = 0;
  const char* name;
  fuse_ino_t child;
  for (off_t k = off; DirEntry(fs, ino, c, k, &name, &child); k++) {
    struct stat st {};
    st.st_ino = child;
    st.st_mode = At(fs, child)->mode;
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, k + 1);
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  Fs* fs = Self(req);
  Node* n = At(fs, ino);
  if (!n) return (void)fuse_reply_err(req, ENOENT);
  if (n->dir) return (void)fuse_reply_err(req, EISDIR);
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return (void)fuse_reply_err(req, EROFS);
  int64_t r = Ask(fs, kOpen, static_cast<int>(ino - 1), 0, 0, nullptr);  // JS opens the view (errors belong to open)
  if (r < 0) return (void)fuse_reply_err(req, static_cast<int>(-r));
  fi->fh = ino;
  if (n->direct) {
    // Known now that it was opened (JS built it): later stats show its size;
    // this open reads through to JS whatever size the kernel has cached.
    int64_t size = SizeOf(fs, static_cast<int>(ino - 1));
    if (size < 0) return (void)fuse_reply_err(req, static_cast<int>(-size));
    fi->direct_io = 1;
    fuse_reply_open(req, fi);
    return;
  }
  // The content of a node never changes while mounted (a changed layer makes
  // its views fail instead): keep the page cache across opens, as libfuse2's
  // auto_cache did with our constant size and mtime.
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  Fs* fs = Self(req);
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_blocks = fs->statfsBlocks.load();
  st.f_files = fs->files.load();
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

// Everything that would change the tree or a file: the mount is read-only.
void Refuse(fuse_req_t req) { fuse_reply_err(req, EROFS); }
void RefuseSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, struct fuse_file_info*) { Refuse(req); }
void RefuseMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { Refuse(req); }
void RefuseMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { Refuse(req); }
void RefuseName(fuse_req_t req, fuse_ino_t, const char*) { Refuse(req); }
void RefuseSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { Refuse(req); }
void RefuseRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { Refuse(req); }
void RefuseLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { Refuse(req); }
void RefuseWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, struct fuse_file_info*) { Refuse(req); }
void RefuseCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) { Refuse(req); }
void RefuseSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { Refuse(req); }

// --- the read path -----------------------------------------------------------

struct Piece {
  uint64_t pos;
  uint64_t len;
  int64_t fd;
  int64_t delta;
  uint64_t fend;
};

// Copies the pieces of [off, off+len) out of the published runs; false if
// some part is not published (or only JS can read it).
bool Collect(Fs* fs, Node* n, uint64_t off, uint64_t len, Piece* pieces, int* count) {
  uint64_t pos = off;
  uint64_t end = off + len;
  int np = 0;
  bool ok = true;
  pthread_rwlock_rdlock(&fs->lock);
  while (ok && pos < end) {
    uint64_t r = pos / fs->region;
    uint64_t c = r >> kChunkShift;
    Region* reg = c < n->chunks.size() && n->chunks[c] ? n->chunks[c][r & (kChunkRegions - 1)] : nullptr;
    if (!reg) {
      ok = false;
      break;
    }
    uint32_t lo = 0, hi = reg->count - 1;  // the run containing pos
    while (lo < hi) {
      uint32_t mid = (lo + hi + 1) / 2;
      if (reg->runs[mid].off <= pos) lo = mid; else hi = mid - 1;
    }
    uint64_t before = pos;
    for (uint32_t i = lo; i < reg->count && pos < end; i++) {
      const Run& run = reg->runs[i];
      if (run.off > pos || run.off + run.len <= pos || run.fd == kSlow) {
        ok = false;
        break;
      }
      uint64_t e = run.off + run.len < end ? run.off + run.len : end;
      Piece* prev = np > 0 ? &pieces[np - 1] : nullptr;
      if (prev && prev->fd == run.fd && prev->pos + prev->len == pos && prev->delta == run.delta && prev->fend == run.fend) {
        prev->len += e - pos;
      } else if (np == kMaxPieces) {
        ok = false;
        break;
      } else {
        pieces[np++] = Piece{pos, e - pos, run.fd, run.delta, run.fend};
      }
      pos = e;
    }
    if (pos == before) ok = false;
  }
  pthread_rwlock_unlock(&fs->lock);
  *count = np;
  return ok;
}

// The file bytes of a piece: where they start, and how many there are before
// the file end (the rest reads as zeros); false for a negative position.
bool FileSpan(const Piece& p, uint64_t* file, uint64_t* inFile) {
  int64_t from = static_cast<int64_t>(p.pos) + p.delta;
  if (from < 0) return false;
  *file = static_cast<uint64_t>(from);
  *inFile = *file >= p.fend ? 0 : (p.fend - *file < p.len ? p.fend - *file : p.len);
  return true;
}

// The pieces into buf (which holds [off, ...)); false on any error or short
// read: JS then reads the whole request again and words the error.
bool ReadPieces(char* buf, uint64_t off, const Piece* pieces, int count) {
  for (int i = 0; i < count; i++) {
    const Piece& p = pieces[i];
    char* at = buf + (p.pos - off);
    if (p.fd == kZero) {
      memset(at, 0, p.len);
      continue;
    }
    uint64_t file, inFile;
    if (!FileSpan(p, &file, &inFile)) return false;
    uint64_t done = 0;
    while (done < inFile) {
      ssize_t r = pread(static_cast<int>(p.fd), at + done, inFile - done, static_cast<off_t>(file + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<uint64_t>(r);
    }
    if (done < p.len) memset(at + done, 0, p.len - done);
  }
  return true;
}

// Zeros into the pipe: page references to gZeros, no copy.
bool SpliceZeros(int pipe, uint64_t len) {
  while (len > 0) {
    struct iovec iov = {gZeros, len < kMaxRead ? len : kMaxRead};
    ssize_t r = vmsplice(pipe, &iov, 1, SPLICE_F_NONBLOCK);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    len -= static_cast<uint64_t>(r);
  }
  return true;
}

// The pieces into this thread's pipe, in order; false on any error, short
// read, or a full pipe (pieces that are not page-aligned take more of its
// slots): the pipe is then dropped and the caller reads with pread.
bool SplicePieces(int pipe, const Piece* pieces, int count) {
  for (int i = 0; i < count; i++) {
    const Piece& p = pieces[i];
    if (p.fd == kZero) {
      if (!SpliceZeros(pipe, p.len)) return false;
      continue;
    }
    uint64_t file, inFile;
    if (!FileSpan(p, &file, &inFile)) return false;
    loff_t at = static_cast<loff_t>(file);
    uint64_t left = inFile;
    while (left > 0) {
      ssize_t r = splice(static_cast<int>(p.fd), &at, pipe, nullptr, left, SPLICE_F_NONBLOCK);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      left -= static_cast<uint64_t>(r);
    }
    if (inFile < p.len && !SpliceZeros(pipe, p.len - inFile)) return false;
  }
  return true;
}

// Replies with the spliced pieces; false (nothing sent) if they could not
// all be spliced.
bool ReplySpliced(fuse_req_t req, uint64_t len, const Piece* pieces, int count) {
  if (!tls.Pipe()) return false;
  if (!SplicePieces(tls.pipe[1], pieces, count)) {
    tls.ClosePipe();  // what was spliced so far must not reach the next reply
    return false;
  }
  struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
  bv.buf[0].flags = FUSE_BUF_IS_FD;
  bv.buf[0].fd = tls.pipe[0];
  fuse_reply_data(req, &bv, static_cast<enum fuse_buf_copy_flags>(0));
  // A reply that failed half way (the reader was interrupted) may leave
  // bytes behind: one ioctl per read to be sure the next reply starts clean.
  int left = 0;
  if (ioctl(tls.pipe[0], FIONREAD, &left) != 0 || left != 0) tls.ClosePipe();
  return true;
}

// JS reads [off, off+len) into this thread's buffer, and the answer is sent.
void ReplyFromJs(Fs* fs, fuse_req_t req, fuse_ino_t ino, uint64_t off, size_t len) {
  char* buf = tls.Buffer();
  if (!buf) return (void)fuse_reply_err(req, ENOMEM);
  int64_t r = Ask(fs, kRead, static_cast<int>(ino - 1), static_cast<double>(off), len, buf);
  if (r < 0) fuse_reply_err(req, static_cast<int>(-r));
  else fuse_reply_buf(req, buf, static_cast<size_t>(r));
}

// A sequential reader of a view (a read starting within a few requests of
// where the last one ended: the kernel's readahead sends several at once,
// not in order) gets the next `ahead` bytes of its published runs announced
// to their layer files with POSIX_FADV_WILLNEED, so that the disk reads them
// while the reader is still busy: many libfuse threads splicing one layer
// file out of order defeat that file's own readahead. Each byte is announced
// once (cached pages cost a page-cache lookup). Where the runs ahead are not
// published yet, JS is asked to publish that region without waiting for it,
// so that a sequential reader rarely waits for JS at a region's start.
void ReadAhead(Fs* fs, Node* n, uint64_t off, uint64_t len) {
  uint64_t end = off + len;
  uint64_t last = n->lastEnd.exchange(end);
  if (off + 4 * kMaxRead < last || off > last + 4 * kMaxRead) return;  // not sequential
  uint64_t nsize = static_cast<uint64_t>(n->size.load());
  uint64_t to = end + fs->ahead < nsize ? end + fs->ahead : nsize;
  uint64_t seen = n->aheadTo.load();
  if (seen >= to && seen <= to + fs->ahead) return;  // announced already (far beyond: a new pass from behind)
  uint64_t from = seen > end && seen < to ? seen : end;
  if (from >= to) return;
  Piece pieces[kMaxPieces];
  int count = 0;
  Collect(fs, n, from, to - from, pieces, &count);  // as far as it is published
  uint64_t covered = count > 0 ? pieces[count - 1].pos + pieces[count - 1].len : from;
  if (covered > from && !n->aheadTo.compare_exchange_strong(seen, covered)) return;  // another thread does it
  for (int i = 0; i < count; i++) {
    uint64_t file, inFile;
    if (pieces[i].fd == kZero || !FileSpan(pieces[i], &file, &inFile) || inFile == 0) continue;
    posix_fadvise(static_cast<int>(pieces[i].fd), static_cast<off_t>(file), static_cast<off_t>(inFile), POSIX_FADV_WILLNEED);
  }
  if (covered >= to || fs->detached) return;
  uint64_t region = covered - covered % fs->region;
  if (n->asked.exchange(region + 1) == region + 1) return;  // asked once per region
  Call* c = new Call{};
  c->op = kAhead;
  c->node = n->index;
  c->pos = static_cast<double>(region);
  c->len = fs->region;
  if (fs->tsfn.NonBlockingCall(c) != napi_ok) delete c;
}

// Serves [off, off+len) of a view from its published runs (spliced, or
// copied when small or when splicing fails); false, with nothing sent, if
// some part is not published or a read failed.
bool ServeFast(Fs* fs, fuse_req_t req, Node* n, uint64_t off, uint64_t len) {
  Piece pieces[kMaxPieces];
  int count = 0;
  bool done = false;
  fs->inflight++;
  if (!fs->detached && Collect(fs, n, off, len, pieces, &count)) {
    // Small reads (4 KiB random I/O) skip it: one shared atomic less per request.
    if (fs->ahead > 0 && len >= kSpliceMin) ReadAhead(fs, n, off, len);
    if (len >= kSpliceMin && ReplySpliced(req, len, pieces, count)) {
      fs->splicedReads++;
      done = true;
    } else {
      char* buf = tls.Buffer();
      if (buf && ReadPieces(buf, off, pieces, count)) {
        fuse_reply_buf(req, buf, len);
        done = true;
      }
    }
  }
  fs->inflight--;
  return done;
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info*) {
  Fs* fs = Self(req);
  Node* n = At(fs, ino);
  if (!n || n->dir) return (void)fuse_reply_err(req, EBADF);
  if (fs->detached) return (void)fuse_reply_err(req, EIO);
  if (offset < 0) return (void)fuse_reply_err(req, EINVAL);
  if (size > kMaxRead) size = kMaxRead;  // never: max_read says so
  uint64_t off = static_cast<uint64_t>(offset);
  if (!n->view) return ReplyFromJs(fs, req, ino, off, size);
  int64_t nsize = n->size.load();
  if (offset >= nsize) return (void)fuse_reply_buf(req, nullptr, 0);
  uint64_t len = static_cast<uint64_t>(nsize - offset) < size ? static_cast<uint64_t>(nsize - offset) : size;
  if (n->stale) return (void)fuse_reply_err(req, EIO);
  // Not published yet: JS resolves and publishes the regions (1 if all of
  // them are plain runs), and the bytes are still read here, on this thread,
  // rather than by JS and copied over.
  if (ServeFast(fs, req, n, off, len)) {
    fs->fastReads++;
    return;
  }
  fs->slowReads++;
  if (Ask(fs, kResolve, static_cast<int>(ino - 1), static_cast<double>(off), len, nullptr) == 1 &&
      ServeFast(fs, req, n, off, len)) {
    fs->resolvedReads++;
    return;
  }
  ReplyFromJs(fs, req, ino, off, len);
}

void OpInit(void*, struct fuse_conn_info* conn) {
  conn->max_read = kMaxRead;  // libfuse wants the mount option's value here too
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  // Not FUSE_CAP_SPLICE_MOVE: a page moved into the view's cache would be
  // taken out of the layer file's, which other views and readers share.
}

// --- the table of published runs (JS thread, under the write lock) -----------

void FreeRegions(Fs* fs, Node* n) {
  for (Region** chunk : n->chunks) {
    if (!chunk) continue;
    for (uint64_t i = 0; i < kChunkRegions; i++) {
      if (chunk[i]) fs->bytes -= RegionBytes(chunk[i]->count);
      free(chunk[i]);
    }
    fs->bytes -= kChunkRegions * sizeof(Region*);
    free(chunk);
  }
  n->chunks.clear();
  n->chunks.shrink_to_fit();
}

void FlushAll(Fs* fs) {
  for (size_t i = 0, n = fs->nodes.size(); i < n; i++) FreeRegions(fs, fs->nodes.at(i));
  fs->flushes++;
}

// --- the loop thread ---------------------------------------------------------

void* Loop(void* arg) {
  Fs* fs = static_cast<Fs*>(arg);
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are Node's
  struct fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(config, 0);
  fuse_session_loop_mt(fs->se, config);
  fuse_loop_cfg_destroy(config);
  fuse_session_unmount(fs->se);  // closes /dev/fuse (and unmounts, if still mounted)
  fuse_session_destroy(fs->se);
  fs->se = nullptr;
  fs->exitCall.op = kExit;
  fs->tsfn.BlockingCall(&fs->exitCall);
  fs->tsfn.Release();
  return nullptr;
}

// libfuse says why a mount failed on stderr only (its own and fusermount3's
// lines): catch those lines.
class StderrCapture {
 public:
  StderrCapture() {
    fd_ = memfd_create("chainfs-mount", 0);
    saved_ = fd_ >= 0 ? dup(2) : -1;
    if (saved_ >= 0) dup2(fd_, 2);
  }
  std::string Finish() {
    std::string out;
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      char tmp[4096];
      ssize_t r = pread(fd_, tmp, sizeof tmp, 0);
      if (r > 0) out.assign(tmp, static_cast<size_t>(r));
    }
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    return out;
  }
  ~StderrCapture() { Finish(); }

 private:
  int fd_ = -1;
  int saved_ = -1;
};

// libfuse's lines as one: "fuse: " prefixes dropped, joined with "; ".
std::string OneLine(const std::string& s) {
  std::string out;
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    std::string line = s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? s.size() : nl + 1;
    if (line.rfind("fuse: ", 0) == 0) line = line.substr(6);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out;
}

struct timespec FromMs(double ms) {
  struct timespec t {};
  double s = ms / 1000;
  t.tv_sec = static_cast<time_t>(s);
  t.tv_nsec = static_cast<long>((ms - static_cast<double>(t.tv_sec) * 1000) * 1e6);
  if (t.tv_nsec < 0) t.tv_nsec = 0;
  return t;
}

// Appends nodes (specs as in src/fuse/native-fuse.ts) at indexes size(),
// size()+1, ...: the whole tree at mount (lazyDir -1: the first is the root),
// or the entries of the lazy directory lazyDir, whose parents are lazyDir or
// nodes of the same batch. Every directory among them, and lazyDir, gets its
// Children published, lazyDir's last. On the JS thread only (one writer).
// False (with a JS exception pending) for a bad spec: nothing is published.
bool AddNodes(Napi::Env env, Fs* fs, Napi::Array specs, int lazyDir) {
  size_t base = fs->nodes.size();
  uint32_t count = specs.Length();
  std::vector<Node*> added;
  std::vector<std::unique_ptr<Children>> kids(count + 1);  // [k]: of added[k]; [count]: of lazyDir
  auto fail = [&](const char* why) {
    for (Node* n : added) delete n;
    if (!env.IsExceptionPending()) Napi::TypeError::New(env, why).ThrowAsJavaScriptException();
    return false;
  };
  Node* dir = lazyDir >= 0 ? At(fs, static_cast<fuse_ino_t>(lazyDir) + 1) : nullptr;
  if (lazyDir >= 0 && (!dir || !dir->dir || !dir->lazy || dir->children.load())) return fail("not a lazy directory, or listed already");
  if (lazyDir < 0 && (base != 0 || count == 0)) return fail("mount needs the whole tree, root first");
  if (lazyDir >= 0) kids[count] = std::make_unique<Children>();
  uint64_t blocks = 0;
  for (uint32_t i = 0; i < count; i++) {
    Napi::Object o = specs.Get(i).As<Napi::Object>();
    if (env.IsExceptionPending()) return fail("bad node");
    auto n = std::make_unique<Node>();
    n->path = o.Get("path").As<Napi::String>().Utf8Value();
    n->name = n->path.substr(n->path.rfind('/') + 1);
    n->index = static_cast<int>(base + i);
    n->parent = o.Get("parent").As<Napi::Number>().Int32Value();
    n->dir = o.Get("dir").As<Napi::Boolean>().Value();
    n->view = o.Get("view").As<Napi::Boolean>().Value();
    n->lazy = n->dir && o.Get("lazy").ToBoolean().Value();
    n->direct = !n->dir && o.Get("direct").ToBoolean().Value();
    n->mode = o.Get("mode").As<Napi::Number>().Uint32Value();
    n->size = static_cast<int64_t>(o.Get("size").As<Napi::Number>().DoubleValue());
    n->blocks = static_cast<int64_t>(o.Get("blocks").As<Napi::Number>().DoubleValue());
    n->mtime = FromMs(o.Get("mtimeMs").As<Napi::Number>().DoubleValue());
    n->ctime = FromMs(o.Get("ctimeMs").As<Napi::Number>().DoubleValue());
    if (env.IsExceptionPending()) return fail("bad node");
    Children* parent = nullptr;
    if (lazyDir < 0 && i == 0) {
      if (n->parent != -1 || !n->dir) return fail("the first node is the root directory");
    } else if (n->parent == lazyDir && lazyDir >= 0) {
      parent = kids[count].get();
    } else if (n->parent >= static_cast<int>(base) && n->parent < n->index && added[n->parent - base]->dir) {
      parent = kids[n->parent - base].get();
    } else {
      return fail("a node's parent is not a directory before it in this batch");
    }
    if (parent) {
      if (!parent->byName.emplace(n->name, n->index).second) return fail("two entries of one directory have the same name");
      parent->order.push_back(n->index);
    }
    if (n->dir && !n->lazy) kids[i] = std::make_unique<Children>();
    if (n->view && n->size > 0) blocks += (static_cast<uint64_t>(n->size.load()) + 4095) / 4096;
    if (!fs->nodes.stage(i, n.get())) return fail("too many nodes");
    added.push_back(n.release());
  }
  // The nodes first (count), then their directories' entries, then lazyDir's.
  fs->nodes.publish(count);
  for (uint32_t i = 0; i < count; i++) {
    if (kids[i]) added[i]->children.store(kids[i].release(), std::memory_order_release);
  }
  fs->files += count;
  if (lazyDir >= 0) {
    fs->statfsBlocks += blocks;
    dir->children.store(kids[count].release(), std::memory_order_release);
  }
  return true;
}

Fs* Get(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "expected a mount handle").ThrowAsJavaScriptException();
    return nullptr;
  }
  return info[0].As<Napi::External<Fs>>().Data();
}


struct fuse_lowlevel_ops Ops() {
  struct fuse_lowlevel_ops ops {};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.getattr = OpGetattr;
  ops.access = OpAccess;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.statfs = OpStatfs;
  ops.setattr = RefuseSetattr;
  ops.mknod = RefuseMknod;
  ops.mkdir = RefuseMkdir;
  ops.unlink = RefuseName;
  ops.rmdir = RefuseName;
  ops.symlink = RefuseSymlink;
  ops.rename = RefuseRename;
  ops.link = RefuseLink;
  ops.write = RefuseWrite;
  ops.create = RefuseCreate;
  ops.setxattr = RefuseSetxattr;
  ops.removexattr = RefuseName;
  return ops;
}

// mount(mountPoint, options, nodes, { budget, region, statfsBlocks }, handler) → handle
Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsString() || !info[2].IsArray() || !info[3].IsObject() ||
      !info[4].IsFunction()) {
    Napi::TypeError::New(env, "mount(mountPoint, options, nodes, config, handler)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto fs = std::make_unique<Fs>();
  fs->mountPoint = info[0].As<Napi::String>().Utf8Value();
  std::string options = info[1].As<Napi::String>().Utf8Value();
  Napi::Object config = info[3].As<Napi::Object>();
  fs->budget = static_cast<size_t>(config.Get("budget").As<Napi::Number>().DoubleValue());
  fs->region = static_cast<uint64_t>(config.Get("region").As<Napi::Number>().DoubleValue());
  fs->statfsBlocks = static_cast<uint64_t>(config.Get("statfsBlocks").As<Napi::Number>().DoubleValue());
  Napi::Value ahead = config.Get("readAhead");
  fs->ahead = ahead.IsNumber() ? static_cast<uint64_t>(ahead.As<Napi::Number>().DoubleValue()) : 0;
  if (env.IsExceptionPending() || !AddNodes(env, fs.get(), info[2].As<Napi::Array>(), -1)) {
    if (!env.IsExceptionPending()) Napi::TypeError::New(env, "bad config").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  struct fuse_lowlevel_ops ops = Ops();
  std::string maxRead = "max_read=" + std::to_string(kMaxRead);
  const char* argv[] = {"chainfs", "-o", options.c_str(), "-o", maxRead.c_str()};
  struct fuse_args args = FUSE_ARGS_INIT(5, const_cast<char**>(argv));
  std::string why;
  {
    StderrCapture capture;
    fs->se = fuse_session_new(&args, &ops, sizeof ops, fs.get());
    if (fs->se && fuse_session_mount(fs->se, fs->mountPoint.c_str()) != 0) {
      fuse_session_destroy(fs->se);
      fs->se = nullptr;
    }
    why = OneLine(capture.Finish());
  }
  fuse_opt_free_args(&args);
  if (!fs->se) {
    Napi::Error::New(env, why.empty() ? "cannot mount" : why).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  fs->tsfn = Tsfn::New(env, info[4].As<Napi::Function>(), "chainfs-fuse", 0, 1, fs.get());
  if (pthread_create(&fs->thread, nullptr, Loop, fs.get()) != 0) {
    fuse_session_unmount(fs->se);
    fuse_session_destroy(fs->se);
    fs->tsfn.Release();
    Napi::Error::New(env, "cannot start the FUSE thread").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pthread_detach(fs->thread);
  // The handle lives as long as the process: the loop thread may outlive
  // every JS reference to it.
  return Napi::External<Fs>::New(env, fs.release());
}

// reply(call, result[, bytes]): the answer to one call; for a read, the
// bytes (result of them) are copied into the thread's buffer.
Napi::Value Reply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "reply(call, result[, bytes])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Call* c = info[0].As<Napi::External<Call>>().Data();
  int64_t result = info[1].As<Napi::Number>().Int64Value();
  if (c->op == kRead && result > 0) {
    if (info.Length() < 3 || !info[2].IsBuffer()) {
      result = -EIO;
    } else {
      Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
      if (static_cast<uint64_t>(result) > c->len || static_cast<size_t>(result) > b.Length()) {
        result = -EIO;
      } else {
        memcpy(c->buf, b.Data(), static_cast<size_t>(result));
      }
    }
  }
  c->result = result;
  sem_post(&c->done);
  return env.Undefined();
}

// publish(handle, node, regionStart, runs: Float64Array [off, len, fd, delta, fend]*)
Napi::Value Publish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  if (info.Length() < 4 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsTypedArray()) {
    Napi::TypeError::New(env, "publish(handle, node, regionStart, runs)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Node* n = At(fs, static_cast<fuse_ino_t>(info[1].As<Napi::Number>().Int64Value() + 1));
  Napi::Float64Array runs = info[3].As<Napi::Float64Array>();
  uint64_t start = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
  uint32_t count = static_cast<uint32_t>(runs.ElementLength() / 5);
  if (!n || !n->view || count == 0 || start % fs->region != 0) return env.Undefined();
  Region* reg = static_cast<Region*>(malloc(RegionBytes(count)));
  if (!reg) return env.Undefined();
  reg->count = count;
  for (uint32_t i = 0; i < count; i++) {
    reg->runs[i] = Run{static_cast<uint64_t>(runs[5 * i]), static_cast<uint64_t>(runs[5 * i + 1]),
                       static_cast<int64_t>(runs[5 * i + 2]), static_cast<int64_t>(runs[5 * i + 3]),
                       static_cast<uint64_t>(runs[5 * i + 4])};
  }
  uint64_t r = start / fs->region;
  uint64_t c = r >> kChunkShift;
  pthread_rwlock_wrlock(&fs->lock);
  if (fs->bytes + RegionBytes(count) + kChunkRegions * sizeof(Region*) > fs->budget) FlushAll(fs);
  if (c >= n->chunks.size()) n->chunks.resize(c + 1, nullptr);
  if (!n->chunks[c]) {
    n->chunks[c] = static_cast<Region**>(calloc(kChunkRegions, sizeof(Region*)));
    if (n->chunks[c]) fs->bytes += kChunkRegions * sizeof(Region*);
  }
  if (n->chunks[c]) {
    Region*& slot = n->chunks[c][r & (kChunkRegions - 1)];
    if (slot) fs->bytes -= RegionBytes(slot->count);
    free(slot);
    slot = reg;
    fs->bytes += RegionBytes(count);
  } else {
    free(reg);
  }
  pthread_rwlock_unlock(&fs->lock);
  return env.Undefined();
}

// addNodes(handle, dir, nodes): the entries of the lazy directory `dir`,
// listed by JS (before it answers the kExpand call that asked).
Napi::Value AddNodesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsArray()) {
    Napi::TypeError::New(env, "addNodes(handle, dir, nodes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  AddNodes(env, fs, info[2].As<Napi::Array>(), info[1].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

// stale(handle, node): the view's reads fail with EIO from now on.
Napi::Value Stale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  Node* n = info.Length() > 1 && info[1].IsNumber() ? At(fs, static_cast<fuse_ino_t>(info[1].As<Napi::Number>().Int64Value() + 1)) : nullptr;
  if (!n) return env.Undefined();
  n->stale = true;
  pthread_rwlock_wrlock(&fs->lock);
  FreeRegions(fs, n);
  pthread_rwlock_unlock(&fs->lock);
  return env.Undefined();
}

// detach(handle): no more reads of layer files from C (JS is about to close
// them); waits for the reads in flight.
Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  fs->detached = true;
  for (int i = 0; i < 2000 && fs->inflight.load() > 0; i++) usleep(1000);
  return env.Undefined();
}

// unmount(handle) → 0 or a negative errno: a lazy unmount by the daemon
// itself when it may (root), without starting fusermount3 (a process start,
// tens of milliseconds on a loaded machine); the caller falls back to it.
Napi::Value Unmount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  int r = umount2(fs->mountPoint.c_str(), MNT_DETACH) == 0 ? 0 : -errno;
  return Napi::Number::New(env, r);
}

// stats(handle) → { fastReads, slowReads, splicedReads, resolvedReads, publishedBytes, flushes }
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("fastReads", Napi::Number::New(env, static_cast<double>(fs->fastReads.load())));
  o.Set("slowReads", Napi::Number::New(env, static_cast<double>(fs->slowReads.load())));
  o.Set("splicedReads", Napi::Number::New(env, static_cast<double>(fs->splicedReads.load())));
  o.Set("resolvedReads", Napi::Number::New(env, static_cast<double>(fs->resolvedReads.load())));
  pthread_rwlock_rdlock(&fs->lock);
  o.Set("publishedBytes", Napi::Number::New(env, static_cast<double>(fs->bytes)));
  pthread_rwlock_unlock(&fs->lock);
  o.Set("flushes", Napi::Number::New(env, static_cast<double>(fs->flushes.load())));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  memset(gZeros, 0, sizeof gZeros);  // real pages, for vmsplice
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("reply", Napi::Function::New(env, Reply));
  exports.Set("publish", Napi::Function::New(env, Publish));
  exports.Set("addNodes", Napi::Function::New(env, AddNodesJs));
  exports.Set("stale", Napi::Function::New(env, Stale));
  exports.Set("detach", Napi::Function::New(env, Detach));
  exports.Set("unmount", Napi::Function::New(env, Unmount));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

}  // namespace

NODE_API_MODULE(chainfs_fuse3, Init)
