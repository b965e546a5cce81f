/* container_of and array length: the two macros every module needs. */
#ifndef SMTPFWD_CONTAINER_H
#define SMTPFWD_CONTAINER_H

#include <stddef.h>

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
