/* sgemm_blocks.c: what splitting one GEMM into row blocks costs OpenBLAS (issue 9, point 6):
 * y (1024,N) = x W^T as one cblas_sgemm of 1024 rows or as blocks of 512..64 rows, one thread.
 *   cc -O2 tests/bench/sgemm_blocks.c -o /tmp/sgemm_blocks -lopenblas && /tmp/sgemm_blocks N K */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){int M=1024,N=atoi(argv[1]),K=atoi(argv[2]);openblas_set_num_threads(1);
float*x=malloc(4L*M*K),*W=malloc(4L*N*K),*y=malloc(4L*M*N);for(long i=0;i<(long)M*K;i++)x[i]=(i%7)*0.1f;for(long i=0;i<(long)N*K;i++)W[i]=(i%5)*0.1f;
int bs[]={1024,512,256,128,64};
for(int r=0;r<2;r++)for(int b=0;b<5;b++){int B=bs[b];double t0=now();for(int rep=0;rep<3;rep++)for(int m=0;m<M;m+=B)cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,B,N,K,1,x+(long)m*K,K,W,K,0,y+(long)m*N,N);double t=(now()-t0)/3;if(r)printf("N=%d K=%d block %4d: %.1f ms %.1f GFLOP/s\n",N,K,B,t*1e3,2.0*M*N*K/t*1e-9);}
}
