module agora.example/wordfreq

go 1.21
