// wordfreq: an Agora job in Go. stdin is the task input (text); stdout
// gets the most frequent words, one "count word" line each, most frequent
// first (ties in byte order). A word is a run of ASCII letters and digits,
// lowercased. argv[1], if given, is how many lines to print (default 10).
//
// Build (Go 1.21 or later; Debian bookworm: golang-1.22-go from
// bookworm-backports):
//
//	GOOS=wasip1 GOARCH=wasm go build -o wordfreq.wasm .
//
// Go's maps iterate in a random order; under Agora, WASI's random_get is
// seeded from the task, and the output is sorted anyway, so every honest
// provider prints the same bytes.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
)

func isWordByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func main() {
	top := 10
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "wordfreq: %q is not a positive count\n", os.Args[1])
			os.Exit(2)
		}
		top = n
	}
	counts := map[string]int{}
	r := bufio.NewReaderSize(os.Stdin, 1<<16)
	word := make([]byte, 0, 64)
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wordfreq: cannot read stdin: %v\n", err)
			os.Exit(1)
		}
		if isWordByte(c) {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			word = append(word, c)
		} else if len(word) > 0 {
			counts[string(word)]++
			word = word[:0]
		}
	}
	if len(word) > 0 {
		counts[string(word)]++
	}
	words := make([]string, 0, len(counts))
	for w := range counts {
		words = append(words, w)
	}
	sort.Slice(words, func(i, j int) bool {
		if counts[words[i]] != counts[words[j]] {
			return counts[words[i]] > counts[words[j]]
		}
		return words[i] < words[j]
	})
	if len(words) > top {
		words = words[:top]
	}
	out := bufio.NewWriter(os.Stdout)
	for _, w := range words {
		fmt.Fprintf(out, "%d %s\n", counts[w], w)
	}
	out.Flush()
}
