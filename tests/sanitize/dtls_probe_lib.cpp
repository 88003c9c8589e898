// A library with a small thread-local block: each thread's copy is allocated by glibc's
// __tls_get_addr when first used, since the library is dlopen'ed (dtls_probe.cpp). At 32 bytes the
// words the interceptor takes for a header make the tracer's scan fault (at 8 they point into
// ASan's unprotected shadow gap, and the hazard goes unseen).
namespace {
thread_local char block[32];
}
extern "C" void* dtls_probe_block() { return block; }
