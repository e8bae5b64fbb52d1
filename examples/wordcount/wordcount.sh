#!/bin/sh
# wordcount: reads the payload on stdin, prints its line, word and byte counts as JSON.
set -eu
wc -lwc | {
  read -r lines words bytes
  printf '{"lines": %d, "words": %d, "bytes": %d}\n' "$lines" "$words" "$bytes"
}
