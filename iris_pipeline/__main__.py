from iris_pipeline.cli import main

main()
