# Helpers of the Python client's proxies (bridge/_proxies.py: RObject,
# Session.importr, tab completion), called through the `call` op.

# R's own print output for an object, as one string; anything the print
# method draws goes to a null device (no Rplots.pdf).
repr_text <- function(x) {
  with_null_device(paste(utils::capture.output(print(x)), collapse = "\n"))
}

# A short description for repr(): a header with the class and size, then the
# first lines of R's print (str() for lists without a class), each cut to
# `width` characters, with R's max.print low so that large objects print fast.
repr_short <- function(x, lines = 12L, width = 100L, seconds = 0.08) {
  old <- options(max.print = 200L, width = width)
  on.exit(options(old))
  setTimeLimit(elapsed = seconds, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf), add = TRUE)
  body <- with_null_device(tryCatch(utils::capture.output(
    if (inherits(x, GRAPHICS_CLASSES)) summary(x)
    else if (is.list(x) && !is.object(x)) utils::str(utils::head(x, lines), max.level = 1L, give.attr = FALSE)
    else print(x)),
    error = function(e) {
      if (grepl("time limit", conditionMessage(e))) "(its print takes too long: str() of it shows all)"
      else paste0("(cannot print: ", conditionMessage(e), ")")
    }))
  body <- body[nzchar(trimws(body)) | seq_along(body) > 1L]
  more <- length(body) - lines
  body <- utils::head(body, lines)
  long <- nchar(body, type = "width") > width
  body[long] <- paste0(substr(body[long], 1L, width - 3L), "...")
  if (more > 0L) body <- c(body, sprintf("... (%d more lines)", more))
  paste(c(sprintf("<RObject %s: %s>", paste(class(x), collapse = "/"), describe_size(x)), body), collapse = "\n")
}

# Objects whose print() draws; repr() shows their summary() instead.
GRAPHICS_CLASSES <- c("ggplot", "trellis", "grob", "gtable", "recordedplot")

describe_size <- function(x) {
  d <- dim(x)
  if (!is.null(d)) return(paste(d, collapse = " x "))
  if (is.environment(x)) return(sprintf("environment of %d objects", length(ls(x, all.names = TRUE))))
  if (is.function(x)) return("function")
  if (isS4(x)) return(sprintf("S4 object with %d slots", length(methods::slotNames(x))))
  sprintf("%s of length %d", typeof(x), length(x))
}

with_null_device <- function(expr) {
  grDevices::pdf(NULL)
  dev <- grDevices::dev.cur()
  on.exit(if (dev %in% grDevices::dev.list()) grDevices::dev.off(dev))
  expr
}

# x[[key]] for RObject[key], refusing what [[ would quietly answer with NULL.
element <- function(x, key) {
  if (!is.character(key) && !is.numeric(key) || length(key) != 1L || is.na(key))
    stop("an element key must be one name or one position")
  if (is.character(key)) {
    known <- if (is.environment(x)) exists(key, envir = x, inherits = FALSE)
             else if (isS4(x)) methods::.hasSlot(x, key) else key %in% names(x)
    if (!known) stop(structure(class = c("rbridge_key_error", "error", "condition"),
                               list(message = sprintf("no element '%s'", key), call = NULL)))
    if (isS4(x) && !is.list(x)) return(methods::slot(x, key))
  } else if (key < 1 || key > length(x)) {
    stop(structure(class = c("rbridge_index_error", "error", "condition"),
                   list(message = sprintf("position %d is out of range (length %d)", key, length(x)), call = NULL)))
  }
  x[[key]]
}

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

# HTML for Jupyter (RObject._repr_html_), bounded in size: a data frame's first
# rows and columns as a table under its dimensions; anything else R's print
# inside <pre>, cut after `lines` lines. Plot objects have none (they draw).
html_of <- function(x, rows = 10L, columns = 20L, lines = 60L) {
  if (inherits(x, GRAPHICS_CLASSES)) return(NULL)
  if (is.data.frame(x)) return(html_table(x, rows, columns))
  text <- strsplit(repr_text(x), "\n", fixed = TRUE)[[1L]]
  if (length(text) > lines) text <- c(text[seq_len(lines)], sprintf("... (%d more lines)", length(text) - lines))
  text <- substr(text, 1L, 500L)
  paste0("<pre>", html_escape(paste(text, collapse = "\n")), "</pre>")
}

html_table <- function(x, rows, columns) {
  shown <- as.data.frame(utils::head(x, rows))[, seq_len(min(ncol(x), columns)), drop = FALSE]
  cells <- vapply(shown, function(col) {
    text <- trimws(format(col, justify = "none"))
    text[is.na(col)] <- "NA"
    html_escape(substr(text, 1L, 200L))
  }, character(nrow(shown)))
  if (!is.matrix(cells)) cells <- matrix(cells, nrow = nrow(shown))
  row_names <- html_escape(rownames(shown))
  body <- vapply(seq_len(nrow(shown)), function(i)
    paste0("<tr><th>", row_names[[i]], "</th>", paste0("<td>", cells[i, ], "</td>", collapse = ""), "</tr>"), "")
  head <- paste0("<tr><th></th>", paste0("<th>", html_escape(names(shown)), "</th>", collapse = ""), "</tr>")
  types <- paste0("<tr><th></th>", paste0("<td><i>", html_escape(vapply(shown, function(c) class(c)[[1L]], "")),
                                          "</i></td>", collapse = ""), "</tr>")
  note <- sprintf("%s: %d rows x %d columns%s%s", html_escape(class(x)[[1L]]), nrow(x), ncol(x),
                  if (nrow(x) > rows) sprintf(", first %d rows", rows) else "",
                  if (ncol(x) > columns) sprintf(", first %d columns", columns) else "")
  paste0("<table class=\"rbridge-data-frame\"><caption>", note, "</caption><thead>", head, types,
         "</thead><tbody>", paste(body, collapse = ""), "</tbody></table>")
}

html_escape <- function(text) {
  text <- gsub("&", "&amp;", text, fixed = TRUE)
  text <- gsub("<", "&lt;", text, fixed = TRUE)
  gsub(">", "&gt;", text, fixed = TRUE)
}
