vectors_path <- function() {
  # tests run from rserver/tests/testthat in the source tree
  p <- file.path("..", "..", "..", "protocol", "vectors", "messages.json")
  if (!file.exists(p)) stop("golden vectors not found at ", normalizePath(p, mustWork = FALSE))
  p
}

hex_to_raw <- function(hex) {
  if (!nzchar(hex)) return(raw())
  as.raw(strtoi(substring(hex, seq(1, nchar(hex), 2), seq(2, nchar(hex), 2)), 16L))
}
