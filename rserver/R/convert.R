# Helpers that the Python client calls through the `call` op.

# R's own print output for an object, as one string.
repr_text <- function(x) paste(utils::capture.output(print(x)), collapse = "\n")

# Names for tab completion: globals and everything on the search path.
completion_names <- function() {
  unique(c(ls(globalenv()), unlist(lapply(search(), ls), use.names = FALSE)))
}

# Attaches a package, as library() does (so that formulas and code see its
# functions, as `Surv` in a survival formula), and lists its exports (for
# Session.importr). A missing package is named, with how to install it.
namespace_exports <- function(package) {
  if (!is.character(package) || length(package) != 1L || is.na(package) || !nzchar(package))
    stop("the package name must be a single string")
  if (!requireNamespace(package, quietly = TRUE)) {
    stop(structure(class = c("rbridge_package_missing", "packageNotFoundError", "error", "condition"),
                   list(message = sprintf(paste0(
                     "there is no R package called '%s' in the worker's library (%s). Install it for the ",
                     "worker's R, e.g. `apt-get install r-cran-%s` on Debian/Ubuntu or ",
                     "`install.packages(\"%s\")` in R"),
                     package, paste(.libPaths(), collapse = ", "), tolower(package), package),
                     call = NULL, package = package)))
  }
  suppressPackageStartupMessages(
    library(package, character.only = TRUE, warn.conflicts = FALSE, quietly = TRUE))
  sort(getNamespaceExports(package))
}

# A deep conversion to values the protocol carries as plain data (for
# RObject.to_py). See README, "Conversion".
plain <- function(x) {
  if (is.null(x) || is.function(x) || is.environment(x) || isS4(x))
    if (is.null(x)) return(NULL) else stop("cannot convert an object of class '", class(x)[[1L]], "' to Python")
  if (is.data.frame(x)) return(lapply(as.list(x), plain))
  if (is.factor(x)) return(plain(as.character(x)))
  if (inherits(x, c("Date", "POSIXt"))) return(plain(format(x, usetz = inherits(x, "POSIXt"))))
  if (is.matrix(x)) return(lapply(seq_len(nrow(x)), function(i) plain(unname(x[i, ]))))
  nms <- names(x)
  if (is.list(x)) {
    x <- lapply(unclass(x), plain)
    attributes(x) <- NULL
    if (keyed(nms)) names(x) <- nms
    return(x)
  }
  if (is.atomic(x)) {
    attributes(x) <- NULL
    if (keyed(nms)) return(stats::setNames(as.list(x), nms))
    return(x)
  }
  stop("cannot convert an object of type '", typeof(x), "' to Python")
}

keyed <- function(nms) !is.null(nms) && all(nzchar(nms)) && !anyNA(nms) && !anyDuplicated(nms)
