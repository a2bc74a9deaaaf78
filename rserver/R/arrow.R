# The Arrow IPC stream codec, exposed for tests and tools (not exported).
# See protocol/SPEC.md ("Arrow payloads").
arrow_encode <- function(x) .Call(C_arrow_encode, x)
arrow_decode <- function(bytes) .Call(C_arrow_decode, bytes)

# ---- R objects the C writer has no form for, given one ------------------------
#
# The C writer knows plain data.frames (and tibbles), atomic vectors, factors,
# dates, times and arrays without dimnames. For other objects that are tables
# or series at heart, the encoder (src/encode.c) calls arrow_form(), which
# returns NULL (the object stays a handle) or list(object, metadata): an
# object of a form the writer knows, and schema metadata (a named character
# vector) that says what the object was (SPEC "Arrow payloads", metadata):
#   - data.frame subclasses (grouped and rowwise tibbles, data.tables, anova
#     tables): a plain data.frame; the class vector and the atomic attributes
#     of the frame and of its columns (labels, I()) as JSON;
#   - matrices with dimnames, and tables: a data.frame of the columns, with
#     rbridge.kind "matrix"; a 1-D table or array with names: a named vector;
#   - time series (ts, mts): the values, with rbridge.tsp;
#   - zoo and xts series: the values and, last, the index, with rbridge.index.
arrow_form <- function(x) {
  if (is.data.frame(x)) return(frame_form(x))
  if (stats::is.ts(x)) return(ts_form(x))
  if (inherits(x, "zoo")) return(zoo_form(x))
  if (is.atomic(x) && !is.null(dimnames(x))) return(dimnames_form(x))
  NULL
}

# Column classes that only mark values R already holds plainly.
MARKER_CLASSES <- c("AsIs", "haven_labelled", "labelled", "vctrs_vctr", "noquote")
KNOWN_CLASSES <- list(factor = "factor", ordered = c("ordered", "factor"), Date = "Date",
                      POSIXct = c("POSIXct", "POSIXt"), difftime = "difftime")
KEPT_ATTRIBUTES <- c("levels", "class", "tzone", "units")

frame_form <- function(x) {
  n <- length(x)
  cols <- vector("list", n)
  col_meta <- list()
  for (i in seq_len(n)) {
    plain <- plain_column(.subset2(x, i))
    if (is.null(plain)) return(NULL)
    cols[[i]] <- plain[[1L]]
    if (length(plain[[2L]])) col_meta[[names(x)[[i]] %||% ""]] <- plain[[2L]]
  }
  df <- structure(cols, names = names(x), row.names = .row_names_info(x, 0L), class = "data.frame")
  meta <- character()
  if (!identical(class(x), "data.frame")) meta[["rbridge.r_class"]] <- to_json(as.list(class(x)))
  extra <- frame_attributes(x)
  if (length(extra)) meta[["rbridge.r_attributes"]] <- to_json(extra)
  if (length(col_meta)) meta[["rbridge.r_column_attributes"]] <- to_json(col_meta)
  list(df, meta)
}

`%||%` <- function(a, b) if (is.null(a)) b else a

# list(column the writer knows, its other attributes), or NULL when it has no
# such form (a list or complex column, a class that changes what the values
# mean such as integer64).
plain_column <- function(v) {
  cls <- oldClass(v)
  if (inherits(v, "POSIXlt")) v <- as.POSIXct(v)
  marks <- intersect(cls, MARKER_CLASSES)
  rest <- setdiff(oldClass(v), MARKER_CLASSES)
  known <- Find(function(k) identical(rest, k), KNOWN_CLASSES)
  if (length(rest) && is.null(known)) return(NULL)
  attrs <- attributes(v)
  extra <- attrs[!names(attrs) %in% c(KEPT_ATTRIBUTES, "names")]
  attributes(v) <- attrs[names(attrs) %in% KEPT_ATTRIBUTES]
  class(v) <- known
  if (length(marks)) extra[["class"]] <- cls
  list(v, Filter(is_plain_value, extra))
}

# Attributes of a frame beyond its names, row names and class that can be
# told as JSON; grouped and rowwise tibbles give their grouping variables.
frame_attributes <- function(x) {
  attrs <- attributes(x)
  attrs <- attrs[!names(attrs) %in% c("names", "row.names", "class")]
  groups <- attrs[["groups"]]
  if (is.data.frame(groups)) attrs[["groups"]] <- as.list(setdiff(names(groups), ".rows"))
  Filter(is_plain_value, attrs)
}

is_plain_value <- function(v) {
  if (is.list(v) && is.null(attributes(v))) return(all(vapply(v, is_plain_value, NA)))
  (is.character(v) || is.numeric(v) || is.logical(v)) && is.null(dim(v)) &&
    all(names(attributes(v)) %in% "names")
}

dimnames_form <- function(x) {
  type <- typeof(x)
  if (!type %in% c("logical", "integer", "double", "character")) return(NULL)
  dn <- dimnames(x)
  meta <- character()
  if (!identical(oldClass(x), NULL)) meta[["rbridge.r_class"]] <- to_json(as.list(class(x)))
  if (length(dim(x)) == 1L) {   # a 1-D table or array: a named vector
    v <- as.vector(x)
    if (!is.null(dn[[1L]])) names(v) <- dn[[1L]]
    return(list(v, meta))
  }
  if (length(dim(x)) != 2L) return(NULL)
  cols <- lapply(seq_len(ncol(x)), function(j) as.vector(x[, j]))
  rn <- if (is.null(dn[[1L]])) .set_row_names(nrow(x)) else dn[[1L]]
  df <- structure(cols, names = dn[[2L]] %||% character(ncol(x)), row.names = rn, class = "data.frame")
  meta[["rbridge.kind"]] <- "matrix"
  meta[["rbridge.colnames"]] <- if (is.null(dn[[2L]])) "0" else "1"
  if (!is.null(names(dn))) meta[["rbridge.dimnames_names"]] <- to_json(as.list(names(dn)))
  list(df, meta)
}

ts_form <- function(x) {
  tsp <- stats::tsp(x)
  meta <- c(rbridge.tsp = paste(format(tsp, digits = 17L), collapse = ","))
  if (!identical(oldClass(x), "ts")) meta[["rbridge.r_class"]] <- to_json(as.list(class(x)))
  if (is.matrix(x)) {
    names <- colnames(x) %||% paste("Series", seq_len(ncol(x)))
    cols <- lapply(seq_len(ncol(x)), function(j) as.vector(x[, j]))
    return(list(structure(cols, names = names, row.names = .set_row_names(nrow(x)), class = "data.frame"),
                meta))
  }
  list(as.vector(x), meta)
}

# A zoo or xts series whose index is a Date, a POSIXct, zoo's yearmon or
# yearqtr, or plain numbers and whose values are a logical, integer, double or
# character vector or matrix: a data.frame of the values' columns and, last,
# the index (yearmon and yearqtr as their numbers, with rbridge.index_class).
# Other indexes and values have no form: the series stays a handle.
zoo_form <- function(x) {
  if (!requireNamespace("zoo", quietly = TRUE)) return(NULL)
  index <- zoo::index(x)
  index_class <- intersect(oldClass(index), names(ZOO_INDEX_CLASSES))
  if (length(index_class)) index <- as.numeric(unclass(index))
  if (inherits(index, "POSIXlt")) index <- as.POSIXct(index)
  if (!is_series_index(index)) return(NULL)
  # only what the type needs: an xts index also has tclass (and tzone on dates)
  kept <- if (inherits(index, "POSIXct")) c("class", "tzone") else "class"
  attributes(index) <- attributes(index)[intersect(names(attributes(index)), kept)]
  core <- zoo::coredata(x)
  if (!typeof(core) %in% c("logical", "integer", "double", "character") || !is.null(oldClass(core)) ||
      length(dim(core)) > 2L) return(NULL)
  meta <- c(rbridge.index = if (is.null(dim(core))) "vector" else "matrix",
            rbridge.r_class = to_json(as.list(class(x))))
  if (length(index_class)) meta[["rbridge.index_class"]] <- index_class[[1L]]
  if (is.null(dim(core))) {
    cols <- list(as.vector(core))
    names <- ""
  } else {
    cols <- lapply(seq_len(ncol(core)), function(j) as.vector(core[, j]))
    names <- colnames(core) %||% character(ncol(core))
    if (is.null(colnames(core))) meta[["rbridge.colnames"]] <- "0"
  }
  df <- structure(c(cols, list(index)), names = c(names, "index"),
                  row.names = c(NA_integer_, -length(index)), class = "data.frame")   # (compact even with no rows)
  list(df, meta)
}

# What a series' index may be on the wire: dates, times or plain numbers.
is_series_index <- function(index) {
  inherits(index, c("Date", "POSIXct")) || (is.numeric(index) && is.null(oldClass(index)))
}

# zoo's index classes of months and quarters, sent as their numbers (the year,
# with the month or quarter as a fraction), and how to make them again.
ZOO_INDEX_CLASSES <- list(yearmon = function(t) zoo::as.yearmon(t), yearqtr = function(t) zoo::as.yearqtr(t))

# ---- what Arrow payloads from clients can stand for beyond the C reader's forms

# A data.frame read from a payload with rbridge.index (src/arrow_to_r.c): the
# values' columns and, last, the index of a zoo series (a zooreg when
# rbridge.r_class names it and the index is still regular), an xts series when
# it names xts (and xts is installed); a plain data.frame, with a warning,
# when zoo is not installed.
as_zoo <- function(df, meta) {
  shape <- meta[["index"]]
  n <- length(df)
  if (!is.data.frame(df) || n < 2L) stop("rbridge: a series payload needs a column of values and one for the index")
  if (!shape %in% c("vector", "matrix")) stop("rbridge: malformed rbridge.index metadata '", shape, "'")
  if (shape == "vector" && n != 2L) stop("rbridge: a vector series payload must have 2 columns")
  index <- .subset2(df, n)
  if (!is_series_index(index)) stop("rbridge: a series' index must be dates, times or numbers")
  index_class <- meta[["index_class"]]
  if (!is.na(index_class) && (!index_class %in% names(ZOO_INDEX_CLASSES) || !is.double(index) ||
                              !is.null(oldClass(index))))
    stop("rbridge: rbridge.index_class '", index_class, "' needs an index of numbers: yearmon or yearqtr")
  values <- unclass(df)[-n]
  if (!all(vapply(values, function(v) is.atomic(v) && is.null(oldClass(v)), NA)) ||
      length(unique(vapply(values, typeof, ""))) > 1L)
    stop("rbridge: the values of a series must be plain vectors of one type")
  if (!requireNamespace("zoo", quietly = TRUE)) {
    warning("rbridge: the zoo package is not installed: the series arrives as a data.frame", call. = FALSE)
    return(df)
  }
  if (!is.na(index_class)) index <- ZOO_INDEX_CLASSES[[index_class]](index)
  core <- if (shape == "vector") values[[1L]] else do.call(cbind, values)
  if (shape == "matrix") dimnames(core) <- if (identical(meta[["colnames"]], "0")) NULL else list(NULL, names(df)[-n])
  cls <- if (is.na(meta[["r_class"]])) character()
         else tryCatch(as.character(jsonlite::fromJSON(meta[["r_class"]])), error = function(e) character())
  if ("xts" %in% cls && requireNamespace("xts", quietly = TRUE)) return(xts::xts(core, order.by = index))
  out <- zoo::zoo(core, order.by = index)
  # a regular series again, its frequency from its index, while it still is one
  if ("zooreg" %in% cls) tryCatch(zoo::as.zooreg(out), error = function(e) out) else out
}

# A data.frame read from a payload with rbridge.kind "matrix" (src/arrow_to_r.c).
matrix_from_frame <- function(df, has_colnames) {
  types <- unique(vapply(df, typeof, ""))
  if (length(types) > 1L || !all(vapply(df, function(v) is.null(attributes(v)), NA)))
    stop("rbridge: the columns of a matrix payload must be plain vectors of one type")
  m <- if (length(df)) do.call(cbind, unclass(df)) else matrix(logical(), nrow(df), 0L)
  if (!is.matrix(m)) m <- matrix(m, nrow = nrow(df))
  rn <- .row_names_info(df, 0L)
  dimnames(m) <- list(if (is.character(rn)) rn else NULL, if (has_colnames) names(df) else NULL)
  if (is.null(dimnames(m)[[1L]]) && is.null(dimnames(m)[[2L]])) dimnames(m) <- NULL
  m
}

# A vector or data.frame read from a payload with rbridge.tsp "start,end,frequency".
as_ts <- function(x, tsp) {
  parts <- suppressWarnings(as.numeric(strsplit(tsp, ",", fixed = TRUE)[[1L]]))
  if (length(parts) != 3L || anyNA(parts) || !all(is.finite(parts)) || parts[[3L]] <= 0)
    stop("rbridge: malformed rbridge.tsp metadata '", tsp, "'")
  values <- if (is.data.frame(x)) as.matrix(x) else x
  out <- stats::ts(values, start = parts[[1L]], frequency = parts[[3L]])
  if (abs(stats::tsp(out)[[2L]] - parts[[2L]]) * parts[[3L]] > 1e-6)
    stop("rbridge: rbridge.tsp '", tsp, "' does not match the series' length")
  attr(out, "tsp") <- parts   # exactly as sent, not recomputed
  out
}

# A data.frame read from a payload with rbridge.r_class (a pandas DataFrame
# that came from R and kept its class in DataFrame.attrs): tibbles, grouped
# and rowwise tibbles (regrouped by their grouping variables, when those
# columns are still there) and data.tables become what they were; other
# classes stay plain data.frames.
restore_form <- function(df, meta) {
  cls <- tryCatch(as.character(jsonlite::fromJSON(meta[["r_class"]])), error = function(e) character())
  attrs <- if (is.na(meta[["r_attributes"]])) list()
           else tryCatch(jsonlite::fromJSON(meta[["r_attributes"]], simplifyVector = FALSE), error = function(e) list())
  groups <- as.character(unlist(attrs[["groups"]]))
  if ("data.table" %in% cls && requireNamespace("data.table", quietly = TRUE))
    return(data.table::as.data.table(df))
  if (!"tbl_df" %in% cls || !requireNamespace("tibble", quietly = TRUE)) return(df)
  out <- tibble::as_tibble(df, rownames = NULL)
  grouped <- intersect(cls, c("grouped_df", "rowwise_df"))
  if (!length(grouped) || !requireNamespace("dplyr", quietly = TRUE)) return(out)
  if (!all(groups %in% names(out))) {
    warning("rbridge: the grouping columns ", paste(setdiff(groups, names(out)), collapse = ", "),
            " are gone: the data is no longer grouped", call. = FALSE)
    return(out)
  }
  vars <- lapply(groups, as.name)
  if (grouped[[1L]] == "rowwise_df") do.call(dplyr::rowwise, c(list(out), vars))
  else do.call(dplyr::group_by, c(list(out), vars))
}

# ---- JSON for schema metadata (written here; read with jsonlite) -----------

to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    items <- vapply(x, to_json, "")
    if (is.null(names(x))) return(paste0("[", paste(items, collapse = ","), "]"))
    return(paste0("{", paste0(json_string(names(x)), ":", items, collapse = ","), "}"))
  }
  values <- if (is.character(x)) json_string(x)
            else if (is.logical(x)) ifelse(x, "true", "false")
            else ifelse(is.finite(x), format(x, digits = 17L, scientific = FALSE, trim = TRUE), "null")
  values[is.na(x)] <- "null"
  if (!is.null(names(x))) return(paste0("{", paste0(json_string(names(x)), ":", values, collapse = ","), "}"))
  if (length(x) == 1L) return(values)
  paste0("[", paste(values, collapse = ","), "]")
}

json_string <- function(s) {
  s <- enc2utf8(as.character(s))
  s <- gsub("\\", "\\\\", s, fixed = TRUE)
  s <- gsub("\"", "\\\"", s, fixed = TRUE)
  s <- gsub("\n", "\\n", s, fixed = TRUE)
  s <- gsub("\r", "\\r", s, fixed = TRUE)
  s <- gsub("\t", "\\t", s, fixed = TRUE)
  paste0("\"", escape_controls(s), "\"")
}

# Remaining control characters as \u00XX escapes.
escape_controls <- function(s) {
  ctrl <- grepl("[\001-\037]", s, useBytes = TRUE)
  s[ctrl] <- vapply(s[ctrl], function(one) {
    chars <- strsplit(one, "", fixed = TRUE)[[1L]]
    low <- vapply(chars, function(ch) nchar(ch, "bytes") == 1L && utf8ToInt(ch) < 32L, NA)
    chars[low] <- sprintf("\\u%04x", vapply(chars[low], utf8ToInt, 0L))
    paste(chars, collapse = "")
  }, "", USE.NAMES = FALSE)
  s
}
