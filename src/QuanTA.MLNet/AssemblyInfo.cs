// QuanTA.MLNet: the ML.NET surface over QuanTA.Core.
