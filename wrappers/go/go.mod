module github.com/extjob/extjob/wrappers/go

go 1.22
