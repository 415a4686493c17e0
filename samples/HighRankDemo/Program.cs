Console.WriteLine("HighRankDemo: see issue 3");
