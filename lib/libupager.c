/*
 * libupager.c - the installed library's own translation unit.
 *
 * The code of upager is compiled once, into the uninstalled convenience
 * library lib/libupager_internal.la that the tests link; the installed
 * lib/libupager.la is that library plus this file (see Makefile.am).  It
 * gives the link a source of its own and records the version in the
 * binary: `strings libupager.so | grep '^upager '` prints it.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

__attribute__((used)) static const char upager__ident[] = "upager " PACKAGE_VERSION;
