/*-------------------------------------------------------------------------
 *
 * malloc_context.c
 *	  A memory context in which every palloc is a malloc of its own, for
 *	  the fuzz driver only.
 *
 * PostgreSQL's AllocSet carves chunks out of 8 kB blocks, so a write one
 * byte past a palloc'd string lands in the next chunk and AddressSanitizer
 * (which sees only the block's malloc) says nothing.  The driver runs each
 * input with this context current: each chunk is then a separate malloc
 * with ASan's red zones around it, and a reset frees them all, so a read
 * or write past a chunk, a use after pfree or after the input's end is
 * reported where it happens.  Contexts the code creates below it (hash
 * tables, jsonb iterators' own) are ordinary AllocSets.
 *
 * PostgreSQL 15 finds a chunk's context in the pointer-sized word right
 * before the chunk (GetMemoryChunkContext), which is the last field of
 * the header here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "lib/ilist.h"
#include "nodes/memnodes.h"
#include "utils/memutils.h"

#include "fuzz.h"

typedef struct MallocChunk
{
	dlist_node	node;			/* in the context's list of live chunks */
	Size		size;
	MemoryContext context;		/* must come right before the chunk */
} MallocChunk;

typedef struct MallocContext
{
	MemoryContextData header;
	dlist_head	chunks;
	Size		nchunks;
} MallocContext;

#define CHUNK_OF(pointer)	((MallocChunk *) (pointer) - 1)

StaticAssertDecl(sizeof(MallocChunk) % MAXIMUM_ALIGNOF == 0,
				 "chunks must stay MAXALIGNed");

static void *
mc_alloc(MemoryContext context, Size size)
{
	MallocContext *mc = (MallocContext *) context;
	MallocChunk *chunk = malloc(sizeof(MallocChunk) + size);

	if (chunk == NULL)
		return NULL;			/* palloc reports out of memory */
	chunk->size = size;
	chunk->context = context;
	dlist_push_head(&mc->chunks, &chunk->node);
	mc->nchunks++;
	context->mem_allocated += size;
	return chunk + 1;
}

static void
mc_free(MemoryContext context, void *pointer)
{
	MallocContext *mc = (MallocContext *) context;
	MallocChunk *chunk = CHUNK_OF(pointer);

	dlist_delete(&chunk->node);
	mc->nchunks--;
	context->mem_allocated -= chunk->size;
	free(chunk);
}

static void *
mc_realloc(MemoryContext context, void *pointer, Size size)
{
	MallocChunk *chunk = CHUNK_OF(pointer);
	MallocChunk *grown;
	Size		old_size = chunk->size;

	/* The list holds the chunk's address, which realloc may change. */
	dlist_delete(&chunk->node);
	grown = realloc(chunk, sizeof(MallocChunk) + size);
	if (grown == NULL)
	{
		dlist_push_head(&((MallocContext *) context)->chunks, &chunk->node);
		return NULL;
	}
	grown->size = size;
	dlist_push_head(&((MallocContext *) context)->chunks, &grown->node);
	context->mem_allocated += size - old_size;
	return grown + 1;
}

static void
mc_reset(MemoryContext context)
{
	MallocContext *mc = (MallocContext *) context;
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &mc->chunks)
	{
		MallocChunk *chunk = dlist_container(MallocChunk, node, iter.cur);

		dlist_delete(&chunk->node);
		free(chunk);
	}
	mc->nchunks = 0;
	context->mem_allocated = 0;
}

static void
mc_delete(MemoryContext context)
{
	mc_reset(context);
	free(context);
}

static Size
mc_get_chunk_space(MemoryContext context, void *pointer)
{
	return CHUNK_OF(pointer)->size + sizeof(MallocChunk);
}

static bool
mc_is_empty(MemoryContext context)
{
	return dlist_is_empty(&((MallocContext *) context)->chunks);
}

static void
mc_stats(MemoryContext context, MemoryStatsPrintFunc printfunc, void *passthru,
		 MemoryContextCounters *totals, bool print_to_stderr)
{
	MallocContext *mc = (MallocContext *) context;

	if (printfunc)
	{
		char		stats[100];

		snprintf(stats, sizeof(stats), "%zu chunks (malloc each); %zu bytes",
				 (size_t) mc->nchunks, (size_t) context->mem_allocated);
		printfunc(context, passthru, stats, print_to_stderr);
	}
	if (totals)
	{
		totals->nblocks += mc->nchunks;
		totals->totalspace += context->mem_allocated + mc->nchunks * sizeof(MallocChunk);
	}
}

static const MemoryContextMethods malloc_methods = {
	mc_alloc,
	mc_free,
	mc_realloc,
	mc_reset,
	mc_delete,
	mc_get_chunk_space,
	mc_is_empty,
	mc_stats
#ifdef MEMORY_CONTEXT_CHECKING
	,NULL
#endif
};

MemoryContext
vb_fuzz_malloc_context(MemoryContext parent, const char *name)
{
	MallocContext *mc = calloc(1, sizeof(MallocContext));

	if (mc == NULL)
		elog(ERROR, "out of memory creating the fuzz context");
	dlist_init(&mc->chunks);
	/* The tag of a built-in context type: nothing downcasts by it. */
	MemoryContextCreate(&mc->header, T_AllocSetContext, &malloc_methods, parent, name);
	return &mc->header;
}
