# The msgpack codec, exposed for tests and tools (not exported).
mp_encode <- function(x) .Call(C_mp_encode, x)
mp_decode <- function(bytes, lookup = FALSE) .Call(C_mp_decode, bytes, lookup)
handle_count <- function() .Call(C_handle_count)
handle_release <- function(ref) .Call(C_handle_release, ref)
