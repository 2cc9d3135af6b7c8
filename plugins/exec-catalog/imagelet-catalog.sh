#!/bin/sh
# An imagelet exec plugin in POSIX shell: serves the image records kept in a
# JSON catalog file (a device's update agent can write it). Protocol 1:
# one JSON request on stdin, one JSON reply on stdout, exit 0.
#   imagelet-catalog.sh CATALOG.json
catalog=${1:?usage: imagelet-catalog.sh CATALOG.json}
read -r request
case $request in
  *'"method":"list"'*)
    printf '{"protocol":1,"images":'
    cat "$catalog" || exit 1
    printf '}\n'
    ;;
  *'"method":"status"'*)
    # No per-image detail beyond the list: imagelet then serves the listed record.
    printf '{"protocol":1,"image":null}\n'
    ;;
  *)
    echo "imagelet-catalog: unknown request: $request" >&2
    exit 2
    ;;
esac
