/*-------------------------------------------------------------------------
 *
 * preload.c
 *	  A definition that libvbfuzzer.so (libFuzzer, preloaded into the fuzz
 *	  backend ahead of the ASan runtime) carries so that the backend can
 *	  start at all.
 *
 * The ASan runtime of a program that was not built with it initialises on
 * the first malloc.  In postgres that malloc comes from libgpg-error's
 * constructor (postgres -> libsystemd -> libgcrypt -> libgpg-error), inside
 * bindtextdomain(), which holds gettext's lock.  ASan's initialisation
 * looks up swift_demangle with dlsym(); when that fails, dlerror()
 * translates its message and takes the same lock: the backend hangs
 * before main() (seen with LLVM 14 and glibc 2.36).  With this definition
 * the lookup succeeds.  ASan calls it only for Swift symbol names, and
 * NULL says "not demangled".
 *
 *-------------------------------------------------------------------------
 */
#include <stddef.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len, char *out,
						   size_t *out_len, unsigned int flags);

char *
swift_demangle(const char *mangled, size_t mangled_len, char *out, size_t *out_len,
			   unsigned int flags)
{
	return NULL;
}
