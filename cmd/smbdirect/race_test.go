//go:build race

package main

// raceEnabled: under the race detector a goroutine's frames are larger,
// and so are an idle connection's stacks (bench scale's memory budget is
// for a normal build).
const raceEnabled = true
